// The bot form (loaded as a module; CSP stays strict). Without this file the form still works: the strategy
// buttons submit the form and the server shows it again with every value kept; the market beside the fields
// is shown once the page is rendered with a symbol.
//
// With it: the strategy switch happens in the page (the other strategies' fields are hidden and disabled, and
// keep what was typed; they are sent along, unchecked, so that a form shown again after an error still has
// them); the market's price and order rules follow the account and the first symbol as they change; and values
// nobody typed are fitted to that market (never a typed one).

const form = document.getElementById("bot-form");

function switchStrategy(key) {
  form.querySelector("[data-strategy-input]").value = key;
  for (const fieldset of form.querySelectorAll("fieldset[data-strategy]")) {
    const active = fieldset.dataset.strategy === key;
    fieldset.hidden = !active;
    fieldset.disabled = !active;
  }
  for (const button of form.querySelectorAll("[data-strategy-switch]")) {
    button.setAttribute("aria-pressed", String(button.dataset.strategySwitch === key));
  }
}

function firstSymbol() {
  const head = (form.elements.symbols?.value || "").split(",")[0].trim().toUpperCase();
  return /^[A-Z0-9]{1,20}\/[A-Z0-9]{1,20}$/.test(head) ? head : null;
}

function showMarket(answer) {
  const texts = answer.texts || {};
  for (const hint of form.querySelectorAll("[data-market-hint]")) {
    const measure = hint.dataset.marketHint;
    hint.textContent = measure === "summary" ? texts.summary || answer.error || "" : texts[measure] || "";
  }
  // A value the form filled in (it still equals what it suggested) follows the market; a typed one stays.
  for (const [name, value] of Object.entries(answer.defaults || {})) {
    const input = form.elements[name];
    if (!input || input.dataset.suggested === undefined || input.dataset.typed) continue;
    if (input.value === input.dataset.suggested || input.value === "") input.value = value;
    input.dataset.suggested = value;
  }
}

let asked = 0;
async function refreshMarket() {
  const symbol = firstSymbol();
  const account = form.elements.account?.value;
  if (!symbol || !account) return;
  const ticket = ++asked;
  const query = new URLSearchParams({ account, symbol });
  let answer;
  try {
    const response = await fetch(`${form.dataset.marketUrl}?${query}`, {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    });
    answer = await response.json();
  } catch {
    answer = { error: "Market unavailable: the console did not answer." };
  }
  if (ticket === asked) showMarket(answer); // an older answer arriving late is dropped
}

if (form) {
  const chosen = () => form.querySelector("[data-strategy-input]").value;
  switchStrategy(chosen());
  // Back to the page from the browser's cache: as it was left.
  window.addEventListener("pageshow", () => switchStrategy(chosen()));
  form.addEventListener("submit", () => {
    for (const fieldset of form.querySelectorAll("fieldset[data-strategy]")) fieldset.disabled = false;
  });
  form.addEventListener("click", (event) => {
    const button = event.target.closest("[data-strategy-switch]");
    if (!button) return;
    event.preventDefault();
    switchStrategy(button.dataset.strategySwitch);
  });
  form.addEventListener("input", (event) => {
    if (event.target.dataset.suggested !== undefined) event.target.dataset.typed = "1";
  });
  let timer;
  form.elements.symbols?.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(refreshMarket, 400);
  });
  form.elements.symbols?.addEventListener("change", refreshMarket);
  form.elements.account?.addEventListener("change", refreshMarket);
}
