// The bot page's chart: price candles of one of the bot's symbols (from the exchange, through the server),
// the bot's fills (arrows) and placed orders (dots) as markers, its open orders and its strategy's grid levels
// as price lines, and below them its PnL at each candle (replayed from its fills by the server).
// It follows the live feed (live.js hands every event on as LIVE_EVENT): a fill adds its marker, an order its
// dot and line, a tick's PnL event moves the last candle to the tick's price and the PnL line to its total.
// The panel stays hidden without JavaScript; the tables below it are the page either way.
// Counts for whoever checks it (the browser tests): data-candles, data-fills, data-orders, data-open-orders,
// data-levels, data-pnl-points, data-live-updates; data-state is loading, ready or error.

import {
  LIVE_EVENT, bucket, chartOptions, choiceButtons, fetchJson, followScheme, library, money, palette,
  pnlLine, precisionFor, showNotes, upsert,
} from "./charts.js";

const OPEN = new Set(["new", "open", "partially_filled"]);

const panel = document.getElementById("bot-chart");
if (panel) library().then((lib) => start(panel, lib), () => {});

function start(panel, lib) {
  panel.hidden = false;
  const box = panel.querySelector("[data-chart]");
  const legend = panel.querySelector("[data-chart-legend]");
  const bot = Number(panel.dataset.bot);
  let colours = palette(panel);
  const chart = lib.createChart(box, chartOptions(box, colours));
  const candles = chart.addSeries(lib.CandlestickSeries, candleStyle(colours));
  const pnl = pnlLine(lib, chart, colours, { title: "PnL" }, 1);
  const markers = lib.createSeriesMarkers(candles, []);
  chart.panes()[0].setStretchFactor(3);
  chart.panes()[1].setStretchFactor(1);

  let view = { symbol: "", timeframe: "", step: 60, unit: "" };
  let bars = [];
  let fills = new Map(); // trade id -> marker
  let placed = new Map(); // order id -> marker
  const lines = new Map(); // order id -> {line, side}: the price line of an open order
  let levelLines = [];
  let loadedAt = 0;
  let liveUpdates = 0;
  const early = []; // events that arrived before the first load finished

  function candleStyle(c) {
    return {
      upColor: c.up, downColor: c.down, borderUpColor: c.up, borderDownColor: c.down,
      wickUpColor: c.up, wickDownColor: c.down,
    };
  }

  function recolour() {
    colours = palette(panel);
    chart.applyOptions(chartOptions(box, colours));
    candles.applyOptions(candleStyle(colours));
    pnl.recolour(colours);
    drawMarkers();
    drawLevels(levelLines.map((line) => line.options().price));
    for (const { line, side } of lines.values()) line.applyOptions(orderLineStyle(side));
  }

  // -- drawing ---------------------------------------------------------------------------------------------------

  function fillMarker(f) {
    const buy = f.side === "buy";
    return {
      time: f.time, price: f.price, shape: buy ? "arrowUp" : "arrowDown",
      position: buy ? "atPriceTop" : "atPriceBottom", color: buy ? colours.up : colours.down,
      id: `fill-${f.trade_id}`,
    };
  }

  function orderMarker(o) {
    return {
      time: o.time, price: o.price, shape: "circle", position: "atPriceMiddle", size: 0.4,
      color: colours.alpha(o.side === "buy" ? colours.up : colours.down, 0.55), id: `order-${o.id}`,
    };
  }

  function drawMarkers() {
    const last = bars.length ? bars[bars.length - 1].time : 0;
    const first = bars.length ? bars[0].time : 0;
    const all = [...placed.values(), ...fills.values()]
      .filter((m) => m.time >= first && m.time <= last)
      .map((m) => (m.kind === "fill" ? fillMarker(m) : orderMarker(m)))
      .sort((a, b) => a.time - b.time);
    markers.setMarkers(all);
    panel.dataset.fills = String(fills.size);
    panel.dataset.orders = String(placed.size);
  }

  function orderLineStyle(side) {
    return {
      color: side === "buy" ? colours.up : colours.down, lineWidth: 1, lineStyle: 2, axisLabelVisible: true,
    };
  }

  function openLine(order) {
    if (order.price == null || lines.has(order.id)) return;
    const line = candles.createPriceLine({ price: order.price, title: `${order.side} ${order.amount}`, ...orderLineStyle(order.side) });
    lines.set(order.id, { line, side: order.side });
    panel.dataset.openOrders = String(lines.size);
  }

  function closeLine(orderId) {
    const open = lines.get(orderId);
    if (!open) return;
    candles.removePriceLine(open.line);
    lines.delete(orderId);
    panel.dataset.openOrders = String(lines.size);
  }

  function drawLevels(levels) {
    levelLines.forEach((line) => candles.removePriceLine(line));
    levelLines = levels.map((price) => candles.createPriceLine({
      price, color: colours.level, lineWidth: 1, lineStyle: 1, axisLabelVisible: false, title: "",
    }));
    panel.dataset.levels = String(levelLines.length);
  }

  function showLegend(bar, value) {
    if (!legend) return;
    const parts = [`${view.symbol} · ${view.timeframe}`];
    if (bar) {
      const p = precisionFor(bar.close);
      parts.push(`O ${bar.open.toFixed(p)} H ${bar.high.toFixed(p)} L ${bar.low.toFixed(p)} C ${bar.close.toFixed(p)}`);
    }
    if (value != null) parts.push(`PnL ${money(value)} ${view.unit}`.trim());
    legend.textContent = parts.join(" · ");
  }

  function legendNow() {
    showLegend(bars[bars.length - 1], pnl.last()?.value);
  }

  chart.subscribeCrosshairMove((param) => {
    if (!param || param.time === undefined) return legendNow();
    showLegend(param.seriesData.get(candles), param.seriesData.get(pnl.series)?.value);
  });

  function counts() {
    panel.dataset.candles = String(bars.length);
    panel.dataset.pnlPoints = String(pnl.points().length);
    panel.dataset.liveUpdates = String(liveUpdates);
  }

  // -- loading ---------------------------------------------------------------------------------------------------

  async function load(params) {
    panel.dataset.state = "loading";
    const url = new URL(panel.dataset.url, location.href);
    for (const [key, value] of Object.entries(params)) if (value) url.searchParams.set(key, value);
    let data;
    try {
      data = await fetchJson(url);
    } catch (error) {
      panel.dataset.state = "error";
      showNotes(panel, [`The chart could not be loaded: ${error.message}`]);
      return;
    }
    view = { symbol: data.symbol, timeframe: data.timeframe, step: data.timeframe_s, unit: data.unit };
    const p = precisionFor(data.candles.length ? data.candles[data.candles.length - 1][4] : data.levels[0]);
    candles.applyOptions({ priceFormat: { type: "price", precision: p, minMove: 10 ** -p } });
    bars = data.candles.map(([time, open, high, low, close]) => ({ time, open, high, low, close }));
    candles.setData(bars);
    pnl.set(data.pnl.map(([time, value]) => ({ time, value })));
    fills = new Map(data.fills.map((f) => [String(f.trade_id), { ...f, kind: "fill" }]));
    placed = new Map(data.orders.map((o) => [o.id, { ...o, kind: "order" }]));
    [...lines.keys()].forEach(closeLine);
    data.open_orders.forEach(openLine);
    panel.dataset.openOrders = String(lines.size);
    drawLevels(data.levels);
    // A fill newer than the candles the server had: its price starts the next candle.
    data.fills.forEach((f) => ensureBar(f.time, f.price));
    drawMarkers();
    chart.timeScale().fitContent();
    showNotes(panel, data.notes);
    loadedAt = data.at;
    counts();
    legendNow();
    panel.dataset.state = "ready";
    tools(data);
    early.splice(0).forEach(apply);
  }

  function tools(data) {
    const holder = panel.querySelector("[data-chart-tools]");
    if (!holder || holder.dataset.built === `${data.symbol}|${data.timeframe}`) return;
    holder.dataset.built = `${data.symbol}|${data.timeframe}`;
    choiceButtons(holder, "Timeframe", data.timeframes, data.timeframe, (tf) => reload({ tf }));
    if (data.symbols.length > 1) {
      const select = document.createElement("select");
      select.setAttribute("aria-label", "Symbol");
      for (const s of data.symbols) select.append(new Option(s, s, false, s === data.symbol));
      select.addEventListener("change", () => reload({ symbol: select.value }));
      holder.append(select);
    }
  }

  function reload(change) {
    load({ symbol: view.symbol, tf: view.timeframe, ...change });
  }

  // -- following the live feed -------------------------------------------------------------------------------------

  function price(time, value) {
    // The last candle takes a new price; a later time opens the next candle from the last close.
    if (value == null || !bars.length) return false;
    const t = time - (time % view.step);
    const last = bars[bars.length - 1];
    const v = Number(value);
    let bar;
    if (t === last.time) bar = { ...last, high: Math.max(last.high, v), low: Math.min(last.low, v), close: v };
    else if (t > last.time) bar = { time: t, open: last.close, high: Math.max(last.close, v), low: Math.min(last.close, v), close: v };
    else return false;
    upsert(bars, bar);
    candles.update(bar);
    return true;
  }

  function ensureBar(time, value) {
    // A marker needs a candle at its time: a fill after the last candle opens the next one at its price.
    if (bars.length && time > bars[bars.length - 1].time) price(time, value);
  }

  function pnlPoint(time, value) {
    if (value == null || !bars.length) return;
    const t = Math.min(time - (time % view.step), bars[bars.length - 1].time);
    pnl.put(t, value);
  }

  const handlers = {
    fill(e, d) {
      if (d.symbol !== view.symbol || d.trade_id == null || fills.has(String(d.trade_id))) return;
      const time = bucket(e.at, view.step);
      ensureBar(time, d.price);
      fills.set(String(d.trade_id), { kind: "fill", time, trade_id: d.trade_id, side: d.side, price: Number(d.price), amount: Number(d.amount) });
      drawMarkers();
    },
    order_new(e, d) {
      if (d.symbol !== view.symbol || d.price == null) return;
      if (!placed.has(d.id)) {
        const time = bucket(e.at, view.step);
        if (bars.length) ensureBar(time, bars[bars.length - 1].close); // a limit price is no trade: the bar stays flat
        placed.set(d.id, { kind: "order", id: d.id, time: Math.min(time, bars.length ? bars[bars.length - 1].time : time), side: d.side, price: Number(d.price) });
        drawMarkers();
      }
      if (OPEN.has(d.status)) openLine({ id: d.id, side: d.side, price: Number(d.price), amount: d.amount });
    },
    order_update(e, d) {
      if (d.symbol !== view.symbol) return;
      if (!OPEN.has(d.status)) closeLine(d.id);
      else if (d.price != null) openLine({ id: d.id, side: d.side, price: Number(d.price), amount: d.amount });
    },
    pnl(e, d) {
      if (Date.parse(e.at) < loadedAt) return; // the loaded chart already holds it
      const time = bucket(e.at, view.step);
      price(time, d.prices ? d.prices[view.symbol] : null);
      pnlPoint(time, d.total);
    },
  };

  function apply(event) {
    if (panel.dataset.state !== "ready") {
      early.push(event);
      return;
    }
    const handler = handlers[event.kind];
    if (!handler || (event.bot != null && Number(event.bot) !== bot)) return;
    handler(event, event.data || {});
    liveUpdates += 1;
    counts();
    legendNow();
  }

  document.addEventListener(LIVE_EVENT, (e) => apply(e.detail));
  followScheme(recolour);
  load({ symbol: panel.dataset.symbol || "", tf: panel.dataset.tf || "" });
}
