// The bots list's fleet form: one box that ticks or clears every bot (loaded as a module; CSP stays
// strict). Without this file the form works the same, one box at a time; the box stays hidden.

const form = document.getElementById("fleet-form");
const all = form?.querySelector("input[data-select-all]");
if (form && all) {
  const boxes = () => [...form.querySelectorAll('input[type=checkbox][name="bot"]')];
  const sync = () => {
    const ticked = boxes().filter((box) => box.checked).length;
    all.checked = ticked > 0 && ticked === boxes().length;
    all.indeterminate = ticked > 0 && ticked < boxes().length;
  };
  all.hidden = false;
  all.addEventListener("change", () => {
    boxes().forEach((box) => (box.checked = all.checked));
    sync();
  });
  form.addEventListener("change", (event) => {
    if (event.target !== all) sync();
  });
  sync();
}
