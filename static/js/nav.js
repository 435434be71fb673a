// The main menu on a narrow screen: folded behind the Menu button, opened and closed by it (a static
// module: CSP forbids inline script). Without this file the menu simply stays open.

const toggle = document.querySelector("[data-navtoggle]");
const panel = toggle && document.getElementById(toggle.getAttribute("aria-controls"));
if (toggle && panel) {
  const set = (open) => {
    toggle.setAttribute("aria-expanded", String(open));
    panel.classList.toggle("open", open);
  };
  document.documentElement.classList.add("navfolds"); // the CSS folds the menu only when this can open it
  toggle.addEventListener("click", () => set(toggle.getAttribute("aria-expanded") !== "true"));
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && toggle.getAttribute("aria-expanded") === "true") {
      set(false);
      toggle.focus();
    }
  });
}
