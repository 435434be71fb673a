// How the console writes times, numbers, money and states in rows a page adds live: the same as the server
// writes them (apps/core/display.py and apps/core/words.py; change both together). Loaded as a module by
// every page (base.html) and imported by the live pages' modules: it also keeps each <time>'s "… ago"
// current.
//
// Times: "2026-12-04 20:01:32 UTC (12 s ago)". Numbers: grouped, at the market's decimals when the page
// knows them (its root's data-decimals: {"BTC/USDT": [amount places, price places]}), else without trailing
// zeros and at most 8 decimals. Money: "1,234.56 USDT". PnL: "+12.30 USDT (gain)" / "−4.10 USDT (loss)".

const MAX_PLACES = 8;
const MINUS = "\u2212";
const CASH = new Set(["USD", "USDT", "USDC", "BUSD", "FDUSD", "TUSD", "DAI", "EUR", "GBP", "CHF", "TRY", "BRL"]);
const UNITS = [
  [86400, "d"],
  [3600, "h"],
  [60, "min"],
  [1, "s"],
];

// -- times --------------------------------------------------------------------------------------------

export function momentText(at) {
  return `${new Date(at).toISOString().slice(0, 19).replace("T", " ")} UTC`;
}

export function agoText(at, now = Date.now()) {
  const seconds = Math.round((now - Date.parse(at)) / 1000);
  const span = Math.abs(seconds);
  for (const [size, unit] of UNITS) {
    if (span >= size || unit === "s") {
      const count = Math.floor(span / size);
      return seconds < 0 ? `in ${count} ${unit}` : `${count} ${unit} ago`;
    }
  }
  return "";
}

// A <time> as the server renders it: the absolute UTC text and, in its own span, how long ago.
export function timeNode(at) {
  const time = document.createElement("time");
  time.dateTime = new Date(at).toISOString();
  const moment = document.createElement("span");
  moment.className = "at";
  moment.textContent = momentText(at);
  const ago = document.createElement("span");
  ago.className = "ago";
  ago.textContent = `(${agoText(at)})`;
  time.append(moment, " ", ago);
  return time;
}

function refreshAges() {
  const now = Date.now();
  document.querySelectorAll("time[datetime] > span.ago").forEach((span) => {
    const text = `(${agoText(span.parentElement.getAttribute("datetime"), now)})`;
    if (span.textContent !== text) span.textContent = text;
  });
}

// -- numbers ------------------------------------------------------------------------------------------

// A decimal string (or number) as {negative, int, frac} digit strings, without going through a float.
function parse(value) {
  const match = /^([+-]?)(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?$/.exec(String(value).trim());
  if (!match || (match[2] === "" && !match[3])) return null;
  let digits = (match[2] || "0") + (match[3] || "");
  let point = (match[2] || "0").length + Number(match[4] || 0);
  if (point < 0) {
    digits = "0".repeat(-point) + digits;
    point = 0;
  }
  if (point > digits.length) digits = digits.padEnd(point, "0");
  return { negative: match[1] === "-", int: digits.slice(0, point) || "0", frac: digits.slice(point) };
}

function increment(digits) {
  const out = digits.split("");
  for (let i = out.length - 1; i >= 0; i -= 1) {
    if (out[i] !== "9") {
      out[i] = String(Number(out[i]) + 1);
      return out.join("");
    }
    out[i] = "0";
  }
  return `1${out.join("")}`;
}

// Rounded half up (away from zero) to `places` decimals, as the server's ROUND_HALF_UP.
function rounded({ negative, int, frac }, places) {
  if (frac.length <= places) return { negative, int, frac: frac.padEnd(places, "0") };
  let digits = int + frac.slice(0, places);
  if (frac[places] >= "5") digits = increment(digits);
  const cut = digits.length - places;
  return { negative, int: digits.slice(0, cut) || "0", frac: digits.slice(cut) };
}

function written({ negative, int, frac }) {
  const whole = int.replace(/^0+(?=\d)/, "").replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  const zero = /^0*$/.test(int + frac);
  return `${negative && !zero ? MINUS : ""}${whole}${frac ? `.${frac}` : ""}`;
}

function isZero({ int, frac }) {
  return /^0*$/.test(int + frac);
}

// A quantity or price: at `places` decimals (the market's) when given, else without trailing zeros.
export function numberText(value, places = null) {
  if (value == null || value === "") return "";
  const parsed = parse(value);
  if (!parsed) return String(value);
  if (places != null) return written(rounded(parsed, places));
  const short = rounded(parsed, MAX_PLACES);
  return written({ ...short, frac: short.frac.replace(/0+$/, "") });
}

function currencyPlaces(currency) {
  return CASH.has(String(currency || "").toUpperCase()) ? 2 : null;
}

export function moneyText(value, currency) {
  const text = numberText(value, currencyPlaces(currency));
  return text ? `${text} ${currency || ""}`.trim() : "";
}

// A gain or loss as a node: signed, with the class "pnl gain" / "pnl loss" / "pnl even" and the word.
export function pnlNode(value, currency) {
  const span = document.createElement("span");
  const parsed = value == null || value === "" ? null : parse(value);
  if (!parsed) {
    span.textContent = value == null ? "" : String(value);
    return span;
  }
  const places = currencyPlaces(currency);
  const round = places == null ? rounded(parsed, MAX_PLACES) : rounded(parsed, places);
  const shown = places == null ? { ...round, frac: round.frac.replace(/0+$/, "") } : round;
  const tone = isZero(shown) ? "even" : shown.negative ? "loss" : "gain";
  span.className = `pnl ${tone}`;
  span.textContent = `${tone === "gain" ? "+" : ""}${written(shown)} ${currency || ""}`.trim();
  if (tone !== "even") {
    const wordNode = document.createElement("span");
    wordNode.className = "pnl-word";
    wordNode.textContent = `(${tone})`;
    span.append(" ", wordNode);
  }
  return span;
}

// The market decimals a page root carries: {"BTC/USDT": [amount places, price places]}.
export function decimalsOf(root) {
  try {
    return JSON.parse(root?.dataset.decimals || "{}");
  } catch (error) {
    return {};
  }
}

export function amountText(value, symbol, decimals) {
  return numberText(value, decimals?.[symbol]?.[0] ?? null);
}

export function priceText(value, symbol, decimals) {
  return numberText(value, decimals?.[symbol]?.[1] ?? null);
}

// -- words --------------------------------------------------------------------------------------------

let table = null;

function words() {
  if (table === null) {
    try {
      table = JSON.parse(document.getElementById("display-words")?.textContent || "{}");
    } catch (error) {
      table = {};
    }
  }
  return table;
}

export function humanized(code) {
  const text = String(code ?? "").replaceAll("_", " ").replaceAll(".", ": ").trim();
  return text.charAt(0).toUpperCase() + text.slice(1);
}

// The word for `code` in one of the tables of apps/core/words.py (for_js), or the code made readable.
export function word(kind, code) {
  return words()[kind]?.[code] || humanized(code);
}

export function botState(observed, desired, halted, haltKind) {
  if (halted) return words().haltedBy?.[haltKind] || "Halted";
  if (observed === "error") return desired === "running" ? "Error, restarting" : "Error";
  if (desired === "running" && observed === "stopped") return "Starting";
  if (desired === "stopped" && (observed === "running" || observed === "starting")) return "Stopping";
  return word("observed", observed);
}

setInterval(refreshAges, 1000);
