// Backup codes, shown once: save them as a text file or print them. Nothing leaves the browser.
import { momentText } from "./format.js";

const list = document.getElementById("backup-codes");
const tools = document.getElementById("backup-code-tools");
if (list && tools) {
  const codes = Array.from(list.querySelectorAll("code"), (c) => c.textContent.trim());
  const text = [
    "botconsole backup codes",
    `for ${list.dataset.user || "your account"}, made ${momentText(Date.now())}`,
    "Each code works once, in place of an authenticator code.",
    "",
    ...codes,
    "",
  ].join("\n");
  tools.hidden = false;
  tools.querySelector("[data-download]").addEventListener("click", () => {
    const url = URL.createObjectURL(new Blob([text], { type: "text/plain" }));
    const link = document.createElement("a");
    link.href = url;
    link.download = "botconsole-backup-codes.txt";
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  });
  tools.querySelector("[data-print]").addEventListener("click", () => window.print());
}
