// The kill report page, live (loaded as a module; no inline script, CSP stays strict).
// The page is complete without this file. With it, every live event of this run (started, each step,
// finished) fetches the report's figures again and puts them in place, so the page reaches the run's
// true final state without a reload. The socket only says "something happened": the figures always come
// from the server's report (state URL), and a slow poll covers a socket that is down.

import { timeNode, word } from "./format.js";
import { followLive } from "./live-socket.js";

const root = document.querySelector("[data-kill-report]");
if (root) start(root);

function start(root) {
  const runId = Number(root.dataset.run);
  const stateUrl = root.dataset.stateUrl;
  const eventsUrl = root.dataset.eventsUrl;
  const status = document.getElementById("live-status");
  let finished = root.dataset.finished === "1";
  let fetching = null;
  let again = false;

  function setStatus(text, state) {
    if (!status) return;
    status.textContent = text;
    status.dataset.state = state;
  }

  function text(id, value) {
    const node = document.getElementById(id);
    if (node) node.textContent = value;
    return node;
  }

  function cell(row, value, label) {
    const td = document.createElement("td");
    td.textContent = value;
    if (label) td.dataset.label = label; // the cell's column on a phone, where the table is cards
    row.append(td);
    return td;
  }

  // A box holding a list of sentences, hidden while the list is empty.
  function items(boxId, listId, lines) {
    const box = document.getElementById(boxId);
    const list = document.getElementById(listId);
    if (!box || !list) return;
    box.hidden = lines.length === 0;
    list.replaceChildren(
      ...lines.map((line) => {
        const item = document.createElement("li");
        item.textContent = line;
        return item;
      }),
    );
  }

  function render(state) {
    const result = document.getElementById("run-result");
    if (result) {
      result.dataset.status = state.status;
      result.textContent = state.finished
        ? `Kill switch ${state.result}`
        : "Trading is halted. The control worker is cleaning up: this report fills in as it goes.";
    }
    text("run-status", state.status_label);
    text("run-duration", state.duration_ms == null ? "running…" : `${state.duration_ms} ms (from the click to verified)`);
    text(
      "run-workers",
      state.workers_stopped_ms == null
        ? "waiting for the fleet…"
        : `${state.workers_stopped} worker${state.workers_stopped === 1 ? "" : "s"}, ${state.workers_stopped_ms} ms after the click`,
    );
    text("run-cancelled", `${state.orders_cancelled}` + (state.paper_orders_cancelled ? ` (${state.paper_orders_cancelled} paper)` : ""));
    const open = text("run-open", state.still_open_text);
    if (open) open.classList.toggle("error", Boolean(state.orders_still_open || state.open_unknown));

    const steps = document.getElementById("run-steps");
    if (steps && state.steps.length) {
      steps.replaceChildren(
        ...state.steps.map((step) => {
          const row = document.createElement("tr");
          cell(row, step.label || word("killStep", step.name));
          cell(row, `${step.ms} ms`);
          cell(row, step.at_ms == null ? "" : `+${step.at_ms} ms`);
          cell(row, step.detail);
          return row;
        }),
      );
    }
    items("run-problems-box", "run-problems", state.problems);
    items("run-takeovers-box", "run-takeovers", state.takeovers || []);
    const balances = document.getElementById("run-balances");
    if (balances && state.balances.length) {
      // As the server renders it: a row per account and asset (free, used by orders, total).
      balances.replaceChildren(...state.balances.flatMap(balanceRows));
    }
    if (state.finished) {
      finished = true;
      root.dataset.finished = "1";
    }
  }

  function balanceRows(b) {
    const row = document.createElement("tr");
    cell(row, b.account, "Account");
    if (b.reached === false || !b.assets.length) {
      const td = cell(row, b.reached === false ? "not reached: open orders and balances unknown" : "none held");
      td.colSpan = 4;
      if (b.reached === false) td.className = "error";
      return [row];
    }
    return b.assets.map((a, i) => {
      const line = i === 0 ? row : document.createElement("tr");
      if (i > 0) cell(line, b.account, "Account");
      cell(line, a.asset, "Asset");
      cell(line, a.free || "—", "Free").className = "num";
      cell(line, a.used || "—", "Used by orders").className = "num";
      cell(line, a.total, "Total").className = "num";
      return line;
    });
  }

  async function refresh() {
    // One request at a time; an event arriving meanwhile asks for one more afterwards.
    if (fetching) {
      again = true;
      return fetching;
    }
    fetching = (async () => {
      do {
        again = false;
        const response = await fetch(stateUrl, { credentials: "same-origin", headers: { Accept: "application/json" } });
        if (!response.ok) throw new Error(`report fetch failed: ${response.status}`);
        render(await response.json());
      } while (again);
    })();
    try {
      await fetching;
    } finally {
      fetching = null;
    }
  }

  function feed(event, line) {
    const list = document.getElementById("feed");
    if (!list) return;
    list.querySelector(".empty")?.remove();
    const item = document.createElement("li");
    item.className = "event alert";
    item.dataset.seq = String(event.seq);
    item.append(timeNode(event.at), ` ${line}`);
    list.prepend(item);
  }

  function line(data) {
    if (data.stage === "started") return `Kill switch started: ${data.reason || ""}`.trim();
    if (data.stage === "progress") return `Kill switch: ${word("killStep", data.step)} (${data.ms} ms)${data.detail ? `: ${data.detail}` : ""}`;
    if (data.stage === "finished") return data.message || `Kill switch ${data.detail || "finished"}`;
    if (data.stage === "taken_over") return data.message || "Kill switch: the run was taken over";
    return `Kill switch ${data.stage || ""}`.trim();
  }

  function apply(event) {
    if (event.kind === "kill_switch" && event.data && Number(event.data.run) === runId) {
      feed(event, line(event.data));
      refresh().catch(() => setStatus("Live (report fetch failed: reload)", "degraded"));
    } else if (event.kind === "order_update" && event.data && event.data.status === "canceled") {
      feed(event, `Order ${event.data.client_order_id} cancelled${event.data.paper ? " (paper)" : ""}`);
    }
  }

  // Should the socket miss an event (or be down), the report still comes to its end: ask every few
  // seconds until the run is finished.
  const poll = setInterval(() => {
    if (finished) {
      clearInterval(poll);
      return;
    }
    refresh().catch(() => {});
  }, 5000);
  followLive({ eventsUrl, after: root.dataset.after, setStatus, onEvent: apply, onCaughtUp: refresh });
}
