// Live updates for the dashboard and the bot page (loaded as a module; no inline script, CSP stays strict).
// The page is complete without this file; it only keeps it current. Every event carries a sequence
// number: after a reconnect the page fetches what it missed, so nothing is lost when a socket drops.

import { amountText, botState, decimalsOf, pnlNode, priceText, timeNode, word } from "./format.js";
import { followLive } from "./live-socket.js";

const root = document.querySelector("[data-live]");
if (root) start(root);

function start(root) {
  const bot = root.dataset.bot || "";
  const eventsUrl = root.dataset.eventsUrl;
  const status = document.getElementById("live-status");
  const decimals = decimalsOf(root);

  function setStatus(text, state) {
    if (!status) return;
    status.textContent = text;
    status.dataset.state = state;
  }

  function apply(event) {
    root.dataset.after = String(event.seq); // the bot page's own module reads how far the feed is
    const handler = handlers[event.kind];
    if (handler) handler(event);
    // charts: bot-chart.js and dashboard-chart.js follow the feed through this event (static/js/charts.js)
    document.dispatchEvent(new CustomEvent("botconsole:live-event", { detail: event }));
  }

  const handlers = {
    order_new: (e) => feed(e, `${word("side", e.data.side)} ${amount(e.data)} ${e.data.symbol}` +
      (e.data.price ? ` at ${price(e.data)}` : " at market") + (e.data.paper ? " (paper)" : ""), "order"),
    order_update: (e) => feed(e, `Order ${e.data.client_order_id}: ${word("orderStatus", e.data.status).toLowerCase()}` +
      (Number(e.data.filled) > 0 ? `, filled ${amountText(e.data.filled, e.data.symbol, decimals)}` : ""), "order"),
    fill: (e) => feed(e, `Fill: ${e.data.side === "sell" ? "sold" : "bought"} ${amount(e.data)} ${e.data.symbol} at ${price(e.data)}`, "fill"),
    gate_refusal: (e) => feed(e, `Order gate refused ${e.data.side} ${e.data.symbol}: ${e.data.message}`, "refusal"),
    alert: (e) => {
      const list = document.getElementById("alerts");
      if (!list) return;
      list.querySelector(".empty")?.remove();
      const item = document.createElement("li");
      item.className = `alert ${e.data.severity}`;
      item.textContent = e.data.message;
      list.prepend(item);
    },
    // The finished event names the result ("Kill switch done in 3.1 s — 8 orders cancelled, 0 open, …").
    kill_switch: (e) => feed(e, killLine(e.data), "alert"),
    bot_state: (e) => {
      const row = botRow(e.bot);
      if (!row) return;
      const cell = row.querySelector("[data-field=state]");
      if (cell) cell.textContent = botState(e.data.observed_state, e.data.desired_state, e.data.halted, e.data.halt_kind);
      // The bot page's "its worker could not run: ..." holds only while the bot is in error.
      if (e.data.observed_state !== "error") row.querySelector("#start-problem")?.remove();
      row.dataset.desired = e.data.desired_state;
    },
    heartbeat: (e) => {
      const row = botRow(e.bot);
      if (!row) return;
      row.dataset.heartbeat = e.at;
      row.querySelector("[data-field=heartbeat]")?.replaceChildren(timeNode(e.at));
      tickAges();
    },
    pnl: (e) => {
      const row = botRow(e.bot);
      const cell = row && row.querySelector("[data-field=pnl]");
      if (cell) cell.replaceChildren(pnlNode(e.data.total, row.dataset.unit));
    },
  };

  function amount(d) {
    return amountText(d.amount, d.symbol, decimals);
  }

  function price(d) {
    return priceText(d.price, d.symbol, decimals);
  }

  // As templates/live/_event.html writes a kill-switch event.
  function killLine(d) {
    if (d.message) return d.message;
    if (d.step) return `Kill switch: ${word("killStep", d.step)}` + (d.detail ? `: ${d.detail}` : "");
    if (d.detail) return `Kill switch: ${d.detail}`;
    return `Kill switch ${d.stage || ""}`.trim();
  }

  function botRow(id) {
    return id == null ? null : document.querySelector(`[data-bot-row="${id}"]`);
  }

  function feed(event, text, kind) {
    const list = document.getElementById("feed");
    if (!list) return;
    list.querySelector(".empty")?.remove();
    const item = document.createElement("li");
    item.className = `event ${kind}`;
    item.dataset.seq = String(event.seq);
    const time = timeNode(event.at);
    const row = botRow(event.bot);
    const who = row ? ` [${row.dataset.name}]` : "";
    item.append(time, ` ${text}${who}`);
    list.prepend(item);
    while (list.children.length > 200) list.lastElementChild.remove();
  }

  function tickAges() {
    const now = Date.now();
    document.querySelectorAll("[data-bot-row]").forEach((row) => {
      const cell = row.querySelector("[data-field=heartbeat]");
      if (!cell || !row.dataset.heartbeat) return;
      // The text is a <time> that format.js keeps current; only the stale mark is decided here.
      const age = Math.max(0, Math.round((now - Date.parse(row.dataset.heartbeat)) / 1000));
      const stale = row.dataset.desired === "running" && age > Math.max(3 * Number(row.dataset.interval || 5), 30);
      cell.classList.toggle("stale", stale);
    });
  }

  setInterval(tickAges, 1000);
  followLive({ eventsUrl, bot, after: root.dataset.after, setStatus, onEvent: apply });
}
