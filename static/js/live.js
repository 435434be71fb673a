// Live updates for the dashboard and the bot page (loaded as a module; no inline script, CSP stays strict).
// The page is complete without this file; it only keeps it current. Every event carries a sequence
// number: after a reconnect the page fetches what it missed, so nothing is lost when a socket drops.

import { followLive } from "./live-socket.js";

const root = document.querySelector("[data-live]");
if (root) start(root);

function start(root) {
  const bot = root.dataset.bot || "";
  const eventsUrl = root.dataset.eventsUrl;
  const status = document.getElementById("live-status");

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
    order_new: (e) => feed(e, `${e.data.side.toUpperCase()} ${e.data.amount} ${e.data.symbol}` +
      (e.data.price ? ` @ ${e.data.price}` : " at market") + (e.data.paper ? " (paper)" : ""), "order"),
    order_update: (e) => feed(e, `Order ${e.data.client_order_id}: ${e.data.status.replace("_", " ")}` +
      (Number(e.data.filled) > 0 ? `, filled ${e.data.filled}` : ""), "order"),
    fill: (e) => feed(e, `FILL ${e.data.side.toUpperCase()} ${e.data.amount} ${e.data.symbol} @ ${e.data.price}`, "fill"),
    gate_refusal: (e) => feed(e, `Refused ${e.data.side} ${e.data.symbol}: ${e.data.message}`, "refusal"),
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
    kill_switch: (e) => feed(e, e.data.message || `Kill switch ${e.data.stage || ""}: ${e.data.step || ""} ${e.data.detail || ""}`.trim(), "alert"),
    bot_state: (e) => {
      const row = botRow(e.bot);
      if (!row) return;
      const cell = row.querySelector("[data-field=state]");
      if (cell) cell.textContent = e.data.halted ? `${e.data.observed_state} (halted)` : e.data.observed_state;
      // The bot page's "its worker could not run: ..." holds only while the bot is in error.
      if (e.data.observed_state !== "error") row.querySelector("#start-problem")?.remove();
      row.dataset.desired = e.data.desired_state;
    },
    heartbeat: (e) => {
      const row = botRow(e.bot);
      if (row) row.dataset.heartbeat = e.at;
      tickAges();
    },
    pnl: (e) => {
      const row = botRow(e.bot);
      const cell = row && row.querySelector("[data-field=pnl]");
      if (cell) cell.textContent = Number(e.data.total).toFixed(2);
    },
  };

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
    const time = document.createElement("time");
    time.dateTime = event.at;
    time.textContent = new Date(event.at).toLocaleTimeString();
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
      const age = Math.max(0, Math.round((now - Date.parse(row.dataset.heartbeat)) / 1000));
      cell.textContent = `${age} s ago`;
      const stale = row.dataset.desired === "running" && age > Math.max(3 * Number(row.dataset.interval || 5), 30);
      cell.classList.toggle("stale", stale);
    });
  }

  setInterval(tickAges, 1000);
  followLive({ eventsUrl, bot, after: root.dataset.after, setStatus, onEvent: apply });
}
