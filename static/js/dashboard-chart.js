// The dashboard's charts: the fleet's PnL over a range (one line, the sum of every bot's) and a sparkline of each
// bot's PnL in its row of the fleet table (a column this module adds; without JavaScript the table is as it was).
// The server replays each bot's fills and marks its positions at each candle's close (apps/trading/charts.py).
// It follows the live feed (live.js hands every event on as LIVE_EVENT): a tick's PnL event moves that bot's
// sparkline and the fleet line to the new total at the current candle (a new candle adds a point).
// For whoever checks it (the browser tests): data-points, data-bots, data-live-updates and data-last (the fleet
// line's last value) on the panel; data-state is loading, ready or error.

import {
  LIVE_EVENT, bucket, chartOptions, choiceButtons, fetchJson, followScheme, library, palette,
  pnlLine, showNotes,
} from "./charts.js";
import { pnlNode } from "./format.js";

const panel = document.getElementById("fleet-chart");
if (panel) library().then((lib) => start(panel, lib), () => {});

function start(panel, lib) {
  panel.hidden = false;
  const box = panel.querySelector("[data-chart]");
  const legend = panel.querySelector("[data-chart-legend]");
  let colours = palette(panel);
  const chart = lib.createChart(box, chartOptions(box, colours));
  const fleet = pnlLine(lib, chart, colours);

  let step = 300;
  let unit = "";
  let latest = new Map(); // bot id -> its PnL now
  let sparks = new Map(); // bot id -> {chart, line}
  let loadedAt = 0;
  let liveUpdates = 0;
  const early = [];

  function recolour() {
    colours = palette(panel);
    chart.applyOptions(chartOptions(box, colours));
    fleet.recolour(colours);
    for (const spark of sparks.values()) spark.line.recolour(colours);
  }

  // -- sparklines: one small chart per bot row -----------------------------------------------------------------

  function sparkCells(label) {
    // A column of the fleet table, added here so that the table without JavaScript stays as the server sent it.
    const table = document.querySelector("tr[data-bot-row]")?.closest("table");
    if (!table) return new Map();
    let head = table.querySelector("th[data-spark-head]");
    if (!head) {
      head = document.createElement("th");
      head.scope = "col";
      head.dataset.sparkHead = "";
      table.tHead?.rows[0]?.append(head);
    }
    head.textContent = `PnL, last ${label}`;
    const cells = new Map();
    table.querySelectorAll("tr[data-bot-row]").forEach((row) => {
      let cell = row.querySelector("td[data-spark]");
      if (!cell) {
        cell = document.createElement("td");
        cell.className = "spark-cell";
        cell.dataset.spark = row.dataset.botRow;
        const holder = document.createElement("div");
        holder.className = "sparkline";
        holder.setAttribute("role", "img");
        holder.setAttribute("aria-label", `PnL of ${row.dataset.name || "the bot"} over the last ${label}`);
        cell.append(holder);
        row.append(cell);
      }
      cells.set(Number(row.dataset.botRow), cell.querySelector(".sparkline"));
    });
    return cells;
  }

  function sparkline(holder) {
    const spark = lib.createChart(holder, {
      autoSize: true,
      layout: { background: { type: "solid", color: "transparent" }, attributionLogo: false, textColor: colours.text },
      grid: { vertLines: { visible: false }, horzLines: { visible: false } },
      rightPriceScale: { visible: false },
      leftPriceScale: { visible: false },
      timeScale: { visible: false, borderVisible: false },
      crosshair: { vertLine: { visible: false, labelVisible: false }, horzLine: { visible: false, labelVisible: false } },
      handleScroll: false,
      handleScale: false,
    });
    const line = pnlLine(lib, spark, colours, {
      lastValueVisible: false, priceLineVisible: false, crosshairMarkerVisible: false, zeroLine: false,
    });
    return { chart: spark, line };
  }

  // -- loading -----------------------------------------------------------------------------------------------------

  async function load(range) {
    panel.dataset.state = "loading";
    const url = new URL(panel.dataset.url, location.href);
    if (range) url.searchParams.set("range", range);
    let data;
    try {
      data = await fetchJson(url);
    } catch (error) {
      panel.dataset.state = "error";
      showNotes(panel, [`The chart could not be loaded: ${error.message}`]);
      return;
    }
    step = data.timeframe_s;
    unit = data.unit;
    fleet.set(data.times.map((time, i) => ({ time, value: data.fleet[i] })));
    chart.timeScale().fitContent();
    const cells = sparkCells(data.range);
    for (const spark of sparks.values()) spark.chart.remove();
    sparks = new Map();
    latest = new Map();
    for (const bot of data.bots) {
      latest.set(bot.id, bot.points[bot.points.length - 1] ?? 0);
      const holder = cells.get(bot.id);
      if (!holder) continue;
      const spark = sparkline(holder);
      spark.line.set(data.times.map((time, i) => ({ time, value: bot.points[i] })));
      spark.chart.timeScale().fitContent();
      sparks.set(bot.id, spark);
    }
    showNotes(panel, data.notes);
    loadedAt = data.at;
    panel.dataset.bots = String(sparks.size);
    counts();
    panel.dataset.state = "ready";
    tools(data);
    early.splice(0).forEach(apply);
  }

  function tools(data) {
    const holder = panel.querySelector("[data-chart-tools]");
    if (!holder || holder.childElementCount) return;
    choiceButtons(holder, "Range", data.ranges, data.range, (range) => load(range));
  }

  function counts() {
    panel.dataset.points = String(fleet.points().length);
    panel.dataset.liveUpdates = String(liveUpdates);
    const last = fleet.last();
    panel.dataset.last = last ? last.value.toFixed(2) : "";
    // Signed, coloured and worded like every PnL on the page (format.js).
    if (legend) legend.replaceChildren(...(last ? ["Fleet PnL now: ", pnlNode(String(last.value), unit)] : []));
  }

  // -- following the live feed ---------------------------------------------------------------------------------------

  function apply(event) {
    if (panel.dataset.state !== "ready") {
      early.push(event);
      return;
    }
    if (event.kind !== "pnl" || event.bot == null || Date.parse(event.at) < loadedAt) return;
    const bot = Number(event.bot);
    if (!latest.has(bot)) return; // a bot the chart does not hold (archived, or added since: reload to see it)
    const value = Number(event.data?.total);
    if (Number.isNaN(value)) return;
    latest.set(bot, value);
    const time = bucket(event.at, step);
    const spark = sparks.get(bot);
    if (spark) spark.line.put(time, value);
    fleet.put(time, [...latest.values()].reduce((sum, v) => sum + v, 0));
    liveUpdates += 1;
    counts();
  }

  document.addEventListener(LIVE_EVENT, (e) => apply(e.detail));
  followScheme(recolour);
  load(panel.dataset.range || "");
}
