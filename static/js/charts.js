// What the console's charts share (the bot page's bot-chart.js, the dashboard's dashboard-chart.js).
// The charting library is TradingView Lightweight Charts, vendored under static/vendor/lightweight-charts/
// and loaded by the page as a deferred classic script (window.LightweightCharts) before these modules: no CDN,
// no inline script or style, so the Content-Security-Policy stays strict. live.js hands every event of the
// live feed on as a LIVE_EVENT on the document; the charts follow the feed through it.

export const LIVE_EVENT = "botconsole:live-event";

// The library, once the page has run its script (a deferred script runs before modules; this waits anyway).
export function library() {
  if (window.LightweightCharts) return Promise.resolve(window.LightweightCharts);
  return new Promise((resolve, reject) => {
    window.addEventListener("load", () => {
      if (window.LightweightCharts) resolve(window.LightweightCharts);
      else reject(new Error("the charting library did not load"));
    }, { once: true });
  });
}

// -- colours: from the page's own CSS (custom properties --chart-*, else its text and card colours) --------------

function rgb(text) {
  const m = /rgba?\(\s*([\d.]+)[ ,]+([\d.]+)[ ,]+([\d.]+)(?:[ ,/]+([\d.]+))?/.exec(text || "");
  return m ? { r: +m[1], g: +m[2], b: +m[3], a: m[4] === undefined ? 1 : +m[4] } : null;
}

function alpha(color, a) {
  const c = rgb(color);
  return c ? `rgba(${c.r}, ${c.g}, ${c.b}, ${a})` : color;
}

function background(node) {
  // The first ancestor with a visible background: the colour the chart sits on.
  for (let el = node; el; el = el.parentElement) {
    const c = rgb(getComputedStyle(el).backgroundColor);
    if (c && c.a > 0) return `rgb(${c.r}, ${c.g}, ${c.b})`;
  }
  return "rgb(255, 255, 255)";
}

function dark(color) {
  const c = rgb(color);
  return Boolean(c) && 0.299 * c.r + 0.587 * c.g + 0.114 * c.b < 128;
}

export function palette(node) {
  const css = getComputedStyle(node);
  const custom = (name) => css.getPropertyValue(name).trim();
  const bg = custom("--chart-bg") || background(node);
  const night = dark(bg);
  const text = custom("--chart-text") || css.color;
  return {
    background: bg,
    text,
    muted: custom("--chart-muted") || alpha(text, 0.6),
    grid: custom("--chart-grid") || alpha(text, night ? 0.12 : 0.08),
    up: custom("--chart-up") || (night ? "#32d583" : "#067647"),
    down: custom("--chart-down") || (night ? "#f97066" : "#b42318"),
    line: custom("--chart-line") || (night ? "#53b1fd" : "#0b5cad"),
    level: custom("--chart-level") || alpha(text, 0.35),
    scheme: night ? "dark" : "light",
    alpha,
  };
}

// A PnL line with break-even marked: green where it ends above zero, red below, muted at zero (a bot that never
// traded draws a grey line). The library colours each stretch by the point it starts from, so each point takes
// the colour of the next one's value. `put` follows the feed: the last point moved, or a new one added.
export function pnlLine(lib, chart, colours, { zeroLine = true, ...options } = {}, pane = 0) {
  const series = chart.addSeries(lib.LineSeries, {
    color: colours.muted, lineWidth: 2, priceFormat: { type: "price", precision: 2, minMove: 0.01 }, ...options,
  }, pane);
  const zero = !zeroLine ? null : series.createPriceLine({
    price: 0, color: colours.level, lineWidth: 1, lineStyle: 1, axisLabelVisible: false,
  });
  let points = [];
  const colour = (v) => (v > 0 ? colours.up : v < 0 ? colours.down : colours.muted);
  const drawn = (p, i) => ({ time: p.time, value: p.value, color: colour((points[i + 1] || p).value) });
  return {
    series,
    points: () => points,
    last: () => points[points.length - 1],
    set(list) {
      points = list.map((p) => ({ time: p.time, value: Number(p.value) }));
      series.setData(points.map(drawn));
    },
    put(time, value) {
      const before = points.length ? Math.sign(points[points.length - 1].value) : null;
      const done = upsert(points, { time, value: Number(value) });
      if (!done) return false;
      if (done === "update" && Math.sign(Number(value)) === before) series.update(drawn(points[points.length - 1], points.length - 1));
      else series.setData(points.map(drawn)); // the stretch before it changes colour too
      return true;
    },
    recolour(next) {
      colours = next;
      series.applyOptions({ color: colours.muted });
      if (zero) zero.applyOptions({ color: colours.level });
      series.setData(points.map(drawn));
    },
  };
}

// Options for a chart drawn in `node`'s colours; it follows its container's size (autoSize).
export function chartOptions(node, colours) {
  node.closest(".chart-panel")?.setAttribute("data-scheme", colours.scheme);
  return {
    autoSize: true,
    layout: {
      background: { type: "solid", color: colours.background },
      textColor: colours.text,
      fontFamily: getComputedStyle(node).fontFamily,
      fontSize: 12,
      // The library's logo injects a <style> element, which the CSP refuses: the panel names TradingView instead.
      attributionLogo: false,
      panes: { separatorColor: colours.grid },
    },
    grid: { vertLines: { color: colours.grid }, horzLines: { color: colours.grid } },
    rightPriceScale: { borderVisible: false },
    // A little room on the right: the newest candle and the last time label are not cut by the price scale.
    timeScale: { borderVisible: false, timeVisible: true, secondsVisible: false, rightOffset: 3 },
    crosshair: { mode: 0 },
  };
}

// Re-colour when the reader's system switches between light and dark.
export function followScheme(apply) {
  const query = window.matchMedia ? window.matchMedia("(prefers-color-scheme: dark)") : null;
  if (query && query.addEventListener) query.addEventListener("change", apply);
}

// -- data -------------------------------------------------------------------------------------------------------

export async function fetchJson(url) {
  const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
  let body = null;
  try {
    body = await response.json();
  } catch (error) {
    body = null;
  }
  if (!response.ok || !body) throw new Error((body && body.error) || `the server answered ${response.status}`);
  return body;
}

// The start of the candle (of `step` seconds) holding the instant `at` (an ISO time or milliseconds).
export function bucket(at, step) {
  const seconds = Math.floor((typeof at === "number" ? at : Date.parse(at)) / 1000);
  return seconds - (seconds % step);
}

// Put `point` ({time, ...}) on the end of `points` (a series' data, ascending): the last one replaced when it
// has the same time, appended when later; an older point changes nothing. Returns what happened.
export function upsert(points, point) {
  const last = points[points.length - 1];
  if (last && point.time < last.time) return null;
  if (last && point.time === last.time) {
    points[points.length - 1] = point;
    return "update";
  }
  points.push(point);
  return "append";
}

// Decimal places that show a price of this size sensibly (60000.12, 1.2345, 0.00001234).
export function precisionFor(value) {
  const v = Math.abs(Number(value) || 0);
  if (v >= 1000) return 2;
  if (v >= 1) return 4;
  return 8;
}

export function money(value) {
  return value == null || Number.isNaN(Number(value)) ? "—" : Number(value).toFixed(2);
}

// Buttons that pick one of `choices` (timeframes, ranges): the chosen one pressed.
export function choiceButtons(holder, label, choices, current, onPick) {
  holder.replaceChildren();
  const group = document.createElement("div");
  group.className = "chart-choices";
  group.setAttribute("role", "group");
  group.setAttribute("aria-label", label);
  for (const choice of choices) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "secondary";
    button.textContent = choice;
    button.setAttribute("aria-pressed", String(choice === current));
    button.addEventListener("click", () => {
      group.querySelectorAll("button").forEach((b) => b.setAttribute("aria-pressed", String(b === button)));
      onPick(choice);
    });
    group.append(button);
  }
  holder.append(group);
  return group;
}

export function showNotes(panel, notes) {
  const box = panel.querySelector("[data-chart-notes]");
  if (!box) return;
  box.textContent = (notes || []).join(" ");
  box.hidden = !box.textContent;
}
