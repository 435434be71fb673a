// The bot page's tables, kept current: open orders (added, changed, removed when closed), positions,
// fills, gate refusals, the PnL breakdown, the "Orders refused" warning and the bot's log (a live tail).
// Loaded as a module after live.js (no inline script, CSP stays strict); the server renders the first
// state, this only updates it.
//
// live.js owns the page's one websocket and moves the root's data-after to each event it applies.
// This file watches that cursor and reads the same events from the catch-up endpoint (the same
// permission rule as the socket), so the page keeps one socket and the tables miss nothing a reconnect
// catches up on.

import { amountText, decimalsOf, numberText, pnlNode, priceText, timeNode, word } from "./format.js";

const OPEN = new Set(["new", "open", "partially_filled"]);
const MAX_ROWS = 50;
const MAX_WARNINGS = 3;
const MAX_LOG_LINES = 200;

const root = document.querySelector("[data-live][data-bot]");
if (root) start(root);

function start(root) {
  const bot = root.dataset.bot;
  const eventsUrl = root.dataset.eventsUrl;
  let cursor = Number(root.dataset.after || 0);
  const decimals = decimalsOf(root);
  const unit = root.querySelector("[data-unit]")?.dataset.unit || "";
  let busy = false;
  let again = false;

  async function pull() {
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    try {
      do {
        again = false;
        for (;;) {
          const response = await fetch(`${eventsUrl}?after=${cursor}&bot=${bot}`, {
            credentials: "same-origin",
            headers: { Accept: "application/json" },
          });
          if (!response.ok) return; // the next event live.js applies tries again
          const body = await response.json();
          body.events.forEach(apply);
          if (body.events.length < 500) break;
        }
      } while (again);
    } catch (error) {
      // Network trouble: live.js shows the connection state; the next event retries from our cursor.
    } finally {
      busy = false;
    }
  }

  function apply(event) {
    if (event.seq <= cursor) return;
    cursor = event.seq;
    const handler = handlers[event.kind];
    if (handler) handler(event);
  }

  const handlers = {
    order_new: (e) => orderRow(e),
    order_update: (e) => orderRow(e),
    fill: (e) => {
      const d = e.data;
      // The server may already have rendered it (an event published while the page was being built).
      if (!hasRow("fills", "trade", d.trade_id)) {
        const fee = `${numberText(d.fee ?? "0")} ${d.fee_currency || ""}`.trim();
        const row = prepend("fills", [timeNode(e.at), d.symbol, word("side", d.side), price(d.price, d), amount(d.amount, d), fee]);
        if (row && d.trade_id != null) row.dataset.trade = String(d.trade_id);
        numeric(row, 3, 4, 5);
      }
      positionRow(d);
    },
    gate_refusal: (e) => {
      const d = e.data;
      if (hasRow("refusals", "refusal", d.id)) return;
      const row = prepend("refusals", [timeNode(e.at), d.symbol, d.side, d.message], "refused");
      if (row && d.id != null) row.dataset.refusal = String(d.id);
      warn(e);
    },
    bot_log: (e) => logLines(e.data.lines || []),
    pnl: (e) => {
      root.querySelector("[data-field=pnl-realized]")?.replaceChildren(pnlNode(e.data.realized, unit));
      root.querySelector("[data-field=pnl-unrealized]")?.replaceChildren(pnlNode(e.data.unrealized, unit));
      root.querySelector("[data-field=pnl-note]")?.remove();
    },
  };

  function orderRow(e) {
    const d = e.data;
    const body = document.getElementById("open-orders");
    if (!body || d.id == null) return;
    let row = body.querySelector(`tr[data-order="${Number(d.id)}"]`);
    if (!OPEN.has(d.status)) {
      // Filled, cancelled, rejected or expired: no longer open.
      row?.remove();
      if (!body.querySelector("tr[data-order]")) empty(body, 7, "None.");
      return;
    }
    if (!row) {
      row = makeRow([timeNode(e.at), d.symbol, word("side", d.side), d.price == null ? "market" : price(d.price, d), amount(d.amount, d), "", ""]);
      numeric(row, 3, 4, 5);
      row.dataset.order = String(d.id);
      row.cells[5].dataset.field = "filled";
      row.cells[6].dataset.field = "status";
      body.querySelector("tr.empty")?.remove();
      body.prepend(row);
      trim(body, 100);
    }
    setText(row.querySelector("[data-field=filled]"), amount(d.filled, d));
    setText(row.querySelector("[data-field=status]"), word("orderStatus", d.status));
  }

  function positionRow(d) {
    const body = document.getElementById("positions");
    if (!body || d.position == null) return;
    let row = [...body.querySelectorAll("tr[data-symbol]")].find((r) => r.dataset.symbol === d.symbol);
    if (!row) {
      row = makeRow([d.symbol, "", "", "", "", ""]);
      row.dataset.symbol = d.symbol;
      ["symbol", "held", "entry", "last", "realized", "unrealized"].forEach((f, i) => (row.cells[i].dataset.field = f));
      numeric(row, 1, 2, 3, 4, 5);
      body.querySelector("tr.empty")?.remove();
      body.append(row);
    }
    const quote = String(d.symbol).split("/")[1]?.split(":")[0] || "";
    setText(row.querySelector("[data-field=held]"), amount(d.position, d));
    setText(row.querySelector("[data-field=entry]"), d.position_average_entry == null ? "—" : price(d.position_average_entry, d));
    setText(row.querySelector("[data-field=last]"), d.position_last_price == null ? "—" : price(d.position_last_price, d));
    row.querySelector("[data-field=realized]")?.replaceChildren(pnlNode(d.position_realized, quote));
    row.querySelector("[data-field=unrealized]")?.replaceChildren(pnlNode(d.position_unrealized, quote));
  }

  function logLines(lines) {
    // A batch comes oldest first; each goes on top, so the newest ends first, as the server renders them.
    const list = document.getElementById("bot-log");
    if (!list) return;
    const min = Number(list.dataset.minLevel || 0);
    for (const line of lines) {
      if (Number(line.levelno) < min) continue;
      if (line.id != null && list.querySelector(`li[data-line="${Number(line.id)}"]`)) continue;
      list.querySelector("li.empty")?.remove();
      const item = document.createElement("li");
      const level = String(line.level || "");
      item.className = `log-line level-${level.toLowerCase().replace(/[^a-z]/g, "")}`;
      if (line.id != null) item.dataset.line = String(line.id);
      item.dataset.level = level;
      item.append(timeNode(line.at), " ", span("level", level), " ", span("logger", line.logger), " ", span("msg", line.message));
      list.prepend(item);
    }
    while (list.querySelectorAll("li[data-line]").length > MAX_LOG_LINES) list.lastElementChild.remove();
  }

  function span(className, text) {
    const node = document.createElement("span");
    node.className = className;
    node.textContent = text == null ? "" : String(text); // text only: a log line is never HTML
    return node;
  }

  function warn(e) {
    const box = document.getElementById("refusal-warning");
    const list = box?.querySelector("ul");
    if (!list) return;
    const item = document.createElement("li");
    item.dataset.at = e.at;
    if (e.data.id != null) item.dataset.refusal = String(e.data.id);
    const small = document.createElement("small");
    small.append(`(${e.data.side} ${e.data.symbol}, `, timeNode(e.at), ")");
    item.append(`${e.data.message} `, small);
    list.prepend(item);
    while (list.children.length > MAX_WARNINGS) list.lastElementChild.remove();
    box.hidden = false;
  }

  function expireWarnings() {
    // Only the last few minutes' refusals are a warning; older ones stay in the table below.
    const box = document.getElementById("refusal-warning");
    if (!box) return;
    const windowMs = 1000 * Number(box.dataset.window || 300);
    box.querySelectorAll("li[data-at]").forEach((li) => {
      if (Date.now() - Date.parse(li.dataset.at) > windowMs) li.remove();
    });
    box.hidden = !box.querySelector("li");
  }

  function prepend(id, cells, className) {
    const body = document.getElementById(id);
    if (!body) return;
    body.querySelector("tr.empty")?.remove();
    const row = makeRow(cells);
    if (className) row.className = className;
    body.prepend(row);
    trim(body, MAX_ROWS);
    return row;
  }

  function hasRow(id, key, value) {
    if (value == null) return false;
    const body = document.getElementById(id);
    return Boolean(body && [...body.rows].some((row) => row.dataset[key] === String(value)));
  }

  function makeRow(cells) {
    const row = document.createElement("tr");
    for (const value of cells) {
      const cell = document.createElement("td");
      if (value instanceof Node) cell.append(value); // a node this file built (a <time>)
      else cell.textContent = value == null ? "" : String(value); // text only: event data is never HTML
      row.append(cell);
    }
    return row;
  }

  function empty(body, span, text) {
    if (body.querySelector("tr.empty")) return;
    const row = makeRow([text]);
    row.className = "empty";
    row.cells[0].colSpan = span;
    body.append(row);
  }

  function trim(body, max) {
    while (body.rows.length > max) body.lastElementChild.remove();
  }

  function setText(node, value) {
    if (node) node.textContent = value == null ? "" : String(value);
  }

  function amount(value, d) {
    return amountText(value, d.symbol, decimals);
  }

  function price(value, d) {
    return priceText(value, d.symbol, decimals);
  }

  function numeric(row, ...indexes) {
    indexes.forEach((i) => row?.cells[i]?.classList.add("num"));
  }

  new MutationObserver(pull).observe(root, { attributes: true, attributeFilter: ["data-after"] });
  setInterval(expireWarnings, 5000);
  expireWarnings();
}
