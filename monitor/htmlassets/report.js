/* pytest-perfmon HTML report: draws the inline data (no network, no dependencies but uPlot). */
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("perfmon-data").textContent);
  var FLAMES = DATA.flames || null;  // --perf-profile: {node id: flame graph SVG}
  var ROWS = DATA.rows, LANES = DATA.lanes, OUTCOMES = DATA.outcomes;
  // row positions, found by name in DATA.fields (html.py ROW_FIELDS)
  function field(name) {
    var i = DATA.fields.indexOf(name);
    if (i < 0) throw new Error("perfmon: the page data has no row field " + name);
    return i;
  }
  var TEST = field("test"), LANE = field("lane"), START = field("start"),
    DUR = field("duration"), SETUP = field("setup"), CALL = field("call"),
    TEARDOWN = field("teardown"), CPU = field("cpu"), MSTART = field("mem_start"),
    MPEAK = field("mem_peak"), MEND = field("mem_end"), MDELTA = field("mem_delta"),
    OUTCOME = field("outcome"), RUNS = field("runs"), SUBTESTS = field("subtests"),
    END = field("end"), WAIT = field("wait"), CONTENDED = field("contended");
  // an execution of a test pytest executed more than once (html.py EXEC_FIELDS)
  var EXECS = DATA.execs || [];
  var X_ROW = 0, X_LANE = 1, X_START = 2, X_DUR = 3, X_SETUP = 4, X_CALL = 5, X_TEARDOWN = 6,
    X_OUTCOME = 7, X_ATTEMPT = 8;
  var css = getComputedStyle(document.documentElement);
  var OUTCOME_COLOR = OUTCOMES.map(function (o) {
    return css.getPropertyValue("--" + o).trim() || "#57606a";
  });
  var PALETTE = ["#0969da", "#cf222e", "#2da44e", "#8250df", "#bc4c00", "#1b7c83", "#bf3989",
    "#9a6700", "#6e7781", "#116329", "#0550ae", "#a40e26"];

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    return e;
  }
  function fmtS(v) {
    if (v == null) return "n/a";
    if (v === 0) return "0 s";
    if (v < 1) return (v * 1000).toFixed(1) + " ms";
    return v.toFixed(v < 100 ? 2 : 0) + " s";
  }
  function axisS(u, vals) { return vals.map(function (v) { return v == null ? "" : fmtS(v); }); }
  function fmtMB(v) { return v == null ? "n/a" : v.toFixed(1) + " MB"; }
  function fmtPct(v) { return v == null ? "n/a" : v.toFixed(1) + " %"; }
  function stop(r) { return r[END] != null ? r[END] : r[START] + (r[DUR] || 0); }
  // the noise certificate: how long a test waited for a CPU, and whether it ran contended
  function waitText(r) {
    if (r[WAIT] == null) return "";
    var share = r[DUR] ? " (" + (100 * r[WAIT] / r[DUR]).toFixed(1) + " % of its duration)" : "";
    return "waited for a CPU " + fmtS(r[WAIT]) + share +
      (r[CONTENDED] ? "; ran contended: its time is not comparable" : "");
  }
  function subtestsText(s) {
    return s[0] + " passed, " + s[1] + " failed, " + s[2] + " skipped";
  }
  var execsOf = {};  // row -> its executions (indices into EXECS), in attempt order
  EXECS.forEach(function (x, k) { (execsOf[x[X_ROW]] = execsOf[x[X_ROW]] || []).push(k); });
  function describe(i, x) {
    var r = ROWS[i], runs = r[RUNS] > 1;
    var head = r[TEST] + "\n" + OUTCOMES[r[OUTCOME]] + (runs ? " after " + r[RUNS] + " executions" : " on " + LANES[r[LANE]].name) +
      ", started at " + fmtS(r[START]);
    if (x) {
      head += "\nthis bar: attempt " + x[X_ATTEMPT] + " of " + r[RUNS] + ", " + OUTCOMES[x[X_OUTCOME]] +
        " on " + LANES[x[X_LANE]].name + " at " + fmtS(x[X_START]) + ", " + fmtS(x[X_DUR]) +
        " (setup " + fmtS(x[X_SETUP]) + ", call " + fmtS(x[X_CALL]) + ", teardown " + fmtS(x[X_TEARDOWN]) + ")";
    }
    return head + "\n" + (runs ? "all executions: " : "") + "duration " + fmtS(r[DUR]) + " (setup " +
      fmtS(r[SETUP]) + ", call " + fmtS(r[CALL]) + ", teardown " + fmtS(r[TEARDOWN]) + ")" +
      (runs ? "\nexecutions: " + (execsOf[i] || []).map(function (k) {
        return OUTCOMES[EXECS[k][X_OUTCOME]] + " " + fmtS(EXECS[k][X_DUR]) + " on " + LANES[EXECS[k][X_LANE]].name;
      }).join(", ") : "") +
      (r[SUBTESTS] ? "\nsubtests: " + subtestsText(r[SUBTESTS]) : "") +
      (r[WAIT] != null ? "\n" + waitText(r) : "") +
      "\nCPU " + fmtPct(r[CPU]) + "\nmemory start " + fmtMB(r[MSTART]) + ", peak " +
      fmtMB(r[MPEAK]) + ", end " + fmtMB(r[MEND]) + " (delta " + fmtMB(r[MDELTA]) + ")";
  }
  var tip = el("div", "tip");
  tip.hidden = true;
  document.body.appendChild(tip);
  function showTip(text, x, y) {
    tip.textContent = text;
    tip.hidden = false;
    var w = tip.offsetWidth, h = tip.offsetHeight;
    tip.style.left = Math.max(4, Math.min(x + 14, innerWidth - w - 4)) + "px";
    tip.style.top = (y + 14 + h > innerHeight ? y - h - 8 : y + 14) + "px";
  }
  function hideTip() { tip.hidden = true; }

  // ------------------------------------------------------------------ headline
  function drawHeadline() {
    var m = DATA.meta, bits = [];
    if (m.timestamp) bits.push("session " + m.timestamp);
    if (m.platform) bits.push(m.platform);
    if (m.python_version) bits.push("Python " + m.python_version);
    if (m.pytest_version) bits.push("pytest " + m.pytest_version);
    if (m.cpu_count) bits.push(m.cpu_count + " CPUs");
    if (m.memory_total_mb) bits.push(Math.round(m.memory_total_mb) + " MB RAM");
    bits.push("perfmon " + m.perfmon_version);
    document.getElementById("meta").textContent = bits.join(" \u00b7 ");
    var cards = document.getElementById("cards");
    DATA.cards.forEach(function (c) {
      var d = el("div", "card");
      d.appendChild(el("div", "label", c.label));
      d.appendChild(el("div", "value", c.value));
      var n = el("div", "note", c.note || "\u00a0");
      n.title = c.note || "";
      d.appendChild(n);
      cards.appendChild(d);
    });
    if (DATA.warnings.length) {
      var w = document.getElementById("warnings");
      DATA.warnings.forEach(function (t) { w.appendChild(el("p", null, t)); });
      w.hidden = false;
    }
    var legend = document.getElementById("outcome-legend");
    var seen = {};
    ROWS.forEach(function (r) { seen[r[OUTCOME]] = true; });
    EXECS.forEach(function (x) { seen[x[X_OUTCOME]] = true; });
    OUTCOMES.forEach(function (o, i) {
      if (!seen[i]) return;
      var s = el("span");
      var sw = el("i");
      sw.style.background = OUTCOME_COLOR[i];
      s.appendChild(sw);
      s.appendChild(document.createTextNode(o));
      legend.appendChild(s);
    });
  }

  // ------------------------------------------------------------------ timeline (own canvas)
  var LANE_H = 22, LANE_GAP = 6, LABEL_W = 110, AXIS_H = 22;
  // The bars: one per test, except a test pytest executed more than once (reruns, --dist
  // each, a crashed worker's test run again): one per execution, on the lane of its worker.
  // A bar: [row, lane, start, duration, outcome, execution index or -1]
  var BARS = [], firstBar = [];
  ROWS.forEach(function (r, i) {
    var xs = execsOf[i];
    firstBar[i] = BARS.length;
    if (!xs) { BARS.push([i, r[LANE], r[START], r[DUR], r[OUTCOME], -1]); return; }
    xs.forEach(function (k) {
      var x = EXECS[k];
      BARS.push([i, x[X_LANE], x[X_START], x[X_DUR], x[X_OUTCOME], k]);
    });
  });
  var B_ROW = 0, B_LANE = 1, B_START = 2, B_DUR = 3, B_OUTCOME = 4, B_EXEC = 5;
  function barStop(b) { return b[B_START] + (b[B_DUR] || 0); }
  var byLane = LANES.map(function () { return []; });
  BARS.forEach(function (b, i) { byLane[b[B_LANE]].push(i); });
  byLane.forEach(function (idx) {
    idx.sort(function (a, b) { return BARS[a][B_START] - BARS[b][B_START]; });
  });
  // the rows of each lane (the memory chart's): by the lane of the test's entry
  var rowsByLane = LANES.map(function () { return []; });
  ROWS.forEach(function (r, i) { rowsByLane[r[LANE]].push(i); });
  rowsByLane.forEach(function (idx) {
    idx.sort(function (a, b) { return ROWS[a][START] - ROWS[b][START]; });
  });
  var tMax = 0;
  ROWS.forEach(function (r) { tMax = Math.max(tMax, stop(r)); });
  BARS.forEach(function (b) { tMax = Math.max(tMax, barStop(b)); });
  DATA.peaks.forEach(function (p) { tMax = Math.max(tMax, p.t); });
  if (!(tMax > 0)) tMax = 1;

  function niceStep(span, n) {
    var raw = span / n, mag = Math.pow(10, Math.floor(Math.log10(raw)));
    var f = raw / mag;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * mag;
  }

  var timeline = document.getElementById("timeline"), tCanvas = timeline.querySelector("canvas");
  function drawTimeline() {
    var width = timeline.clientWidth || 800;
    var height = AXIS_H + LANES.length * (LANE_H + LANE_GAP) + 4;
    var dpr = window.devicePixelRatio || 1;
    tCanvas.width = Math.round(width * dpr);
    tCanvas.height = Math.round(height * dpr);
    tCanvas.style.height = height + "px";
    var g = tCanvas.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, width, height);
    var plotW = width - LABEL_W - 8, sx = plotW / tMax;
    g.font = "11px sans-serif";
    g.textBaseline = "middle";
    // axis
    var step = niceStep(tMax, Math.max(2, Math.floor(plotW / 90)));
    g.fillStyle = "#59636e";
    g.strokeStyle = "#eef1f4";
    for (var t = 0; t <= tMax + 1e-9; t += step) {
      var x = LABEL_W + t * sx;
      g.beginPath(); g.moveTo(x + 0.5, AXIS_H - 4); g.lineTo(x + 0.5, height); g.stroke();
      if (x + 40 < width) g.fillText(fmtS(t), x + 2, AXIS_H / 2);
    }
    LANES.forEach(function (lane, li) {
      var y = AXIS_H + li * (LANE_H + LANE_GAP);
      g.fillStyle = "#f6f8fa";
      g.fillRect(LABEL_W, y, plotW, LANE_H);
      g.fillStyle = "#1f2328";
      g.fillText(lane.name + (lane.starts_known ? "" : " *"), 4, y + LANE_H / 2, LABEL_W - 8);
      var lastPx = -1, lastColor = -1;
      byLane[li].forEach(function (i) {
        var b = BARS[i], x0 = LABEL_W + b[B_START] * sx, w = Math.max(1, (b[B_DUR] || 0) * sx);
        // many sub-pixel tests in one pixel column: draw it once
        var px = Math.floor(x0);
        if (w <= 1 && px === lastPx && b[B_OUTCOME] === lastColor) return;
        lastPx = px; lastColor = b[B_OUTCOME];
        g.fillStyle = OUTCOME_COLOR[b[B_OUTCOME]];
        g.fillRect(x0, y + 2, w, LANE_H - 4);
        if (w > 3) { g.fillStyle = "rgba(255,255,255,0.7)"; g.fillRect(x0 + w - 1, y + 2, 1, LANE_H - 4); }
        // an execution of a test executed more than once: a dark mark along its top
        if (b[B_EXEC] >= 0 && w > 2) { g.fillStyle = "rgba(31,35,40,0.55)"; g.fillRect(x0, y + 2, w, 2); }
      });
    });
    DATA.peaks.forEach(function (p) {
      var x = LABEL_W + p.t * sx;
      g.strokeStyle = "#cf222e";
      g.setLineDash([4, 3]);
      g.beginPath(); g.moveTo(x + 0.5, AXIS_H - 2); g.lineTo(x + 0.5, height); g.stroke();
      g.setLineDash([]);
    });
    tCanvas._geom = { sx: sx, width: width };
  }
  function timelineHit(ev) {
    var rect = tCanvas.getBoundingClientRect(), geom = tCanvas._geom;
    var x = ev.clientX - rect.left, y = ev.clientY - rect.top;
    var li = Math.floor((y - AXIS_H) / (LANE_H + LANE_GAP));
    if (li < 0 || li >= LANES.length || x < LABEL_W) return null;
    var t = (x - LABEL_W) / geom.sx, tol = 3 / geom.sx, idx = byLane[li];
    // last bar starting at or before t (+ tolerance), then its neighbours
    var lo = 0, hi = idx.length - 1, best = -1;
    while (lo <= hi) {
      var mid = (lo + hi) >> 1;
      if (BARS[idx[mid]][B_START] <= t + tol) { best = mid; lo = mid + 1; } else hi = mid - 1;
    }
    var hit = null, dist = Infinity;
    for (var k = Math.max(0, best - 2); k <= Math.min(idx.length - 1, best + 1); k++) {
      var b = BARS[idx[k]], d = t < b[B_START] ? b[B_START] - t : t > barStop(b) ? t - barStop(b) : 0;
      if (d < dist) { dist = d; hit = b; }
    }
    return dist <= tol ? hit : null;
  }
  tCanvas.addEventListener("mousemove", function (ev) {
    var b = timelineHit(ev);
    if (b) showTip(describe(b[B_ROW], b[B_EXEC] >= 0 ? EXECS[b[B_EXEC]] : null), ev.clientX, ev.clientY);
    else hideTip();
  });
  tCanvas.addEventListener("mouseleave", hideTip);

  // ------------------------------------------------------------------ memory (uPlot)
  function buildMemory() {
    // events: (time, series, value); one x slot per distinct time unless the series is taken
    var ev = [], series = [];
    LANES.forEach(function (lane, li) {
      var s0 = series.length;
      series.push({ label: lane.name + " RSS", lane: li, kind: "rss" });
      series.push({ label: lane.name + " test peak", lane: li, kind: "peak" });
      rowsByLane[li].forEach(function (i) {
        var r = ROWS[i], t0 = r[START], startHere = true, xs = execsOf[i];
        if (xs) {  // executed more than once: its memory starts where its first execution ran
          var first = EXECS[xs[0]];
          if (first[X_LANE] !== li) { startHere = false; t0 = EXECS[xs[xs.length - 1]][X_START]; }
        }
        if (r[MSTART] != null && startHere) ev.push([t0, s0, r[MSTART]]);
        if (r[MEND] != null) ev.push([stop(r), s0, r[MEND]]);
        if (r[MPEAK] != null) { ev.push([t0, s0 + 1, r[MPEAK]]); ev.push([stop(r), s0 + 1, r[MPEAK]]); }
      });
    });
    ev.sort(function (a, b) { return a[0] - b[0]; });
    var xs = [], cols = series.map(function () { return []; });
    ev.forEach(function (e) {
      var last = xs.length - 1;
      if (last < 0 || xs[last] !== e[0] || cols[e[1]][last] != null) {
        xs.push(last >= 0 && e[0] <= xs[last] ? xs[last] + 1e-6 : e[0]);
        cols.forEach(function (c) { c.push(null); });
        last++;
      }
      cols[e[1]][last] = e[2];
    });
    return { xs: xs, cols: cols, series: series };
  }

  function peakPlugin() {
    return {
      hooks: {
        draw: function (u) {
          var g = u.ctx;
          DATA.peaks.forEach(function (p) {
            var x = Math.round(u.valToPos(p.t, "x", true)), top = u.bbox.top, bot = top + u.bbox.height;
            g.save();
            g.strokeStyle = "#cf222e";
            g.lineWidth = 1.5 * devicePixelRatio;
            g.setLineDash([5 * devicePixelRatio, 4 * devicePixelRatio]);
            g.beginPath(); g.moveTo(x, top); g.lineTo(x, bot); g.stroke();
            g.setLineDash([]);
            // each worker's RSS at that moment, in its colour
            p.workers.forEach(function (w) {
              if (w.rss_mb == null || w.lane == null) return;
              var y = u.valToPos(w.rss_mb, "y", true);
              g.fillStyle = PALETTE[w.lane % PALETTE.length];
              g.strokeStyle = "#fff";
              g.lineWidth = 1.5 * devicePixelRatio;
              g.beginPath(); g.arc(x, y, 4.5 * devicePixelRatio, 0, 7); g.fill(); g.stroke();
            });
            g.fillStyle = "#cf222e";
            g.font = 11 * devicePixelRatio + "px sans-serif";
            var label = "concurrent peak: " + fmtMB(p.total_rss_mb) + " together" + (p.group ? " (" + p.group + ")" : "");
            var tw = g.measureText(label).width;
            var lx = x + tw + 8 > u.bbox.left + u.bbox.width ? x - tw - 6 : x + 6;
            g.fillText(label, lx, top + 12 * devicePixelRatio);
            g.restore();
          });
        },
      },
    };
  }

  function chartWidth(id) { return document.getElementById(id).clientWidth || 800; }

  var memPlot = null, cpuPlot = null;
  function drawMemory() {
    var m = buildMemory(), cap = document.getElementById("memory-caption");
    cap.textContent = "Per worker, what the report holds: the RSS at each test's start and end " +
      "(solid line) and the peak RSS within each test, drawn across the test (dashed). The report " +
      "has no continuous memory series; between tests the line is interpolated." +
      (DATA.peaks.length ? " The red line marks the concurrent peak: the moment the workers' RSS " +
        "added up to the most; the dots on it are each worker's RSS then." : "") +
      (DATA.merged ? " Each job's times count from its own start." : "");
    var series = [{ label: "time (s)", value: function (u, v) { return v == null ? "" : fmtS(v); } }];
    m.series.forEach(function (s) {
      var color = PALETTE[s.lane % PALETTE.length];
      series.push({
        label: s.label, stroke: color, width: s.kind === "rss" ? 1.5 : 1,
        dash: s.kind === "peak" ? [4, 3] : undefined, spanGaps: true,
        points: { show: false },
        value: function (u, v) { return v == null ? "" : fmtMB(v); },
      });
    });
    var opts = {
      width: chartWidth("memory"), height: 300, series: series, plugins: [peakPlugin()],
      scales: { x: { time: false }, y: { range: function (u, lo, hi) { return [0, hi * 1.12 || 1]; } } },
      axes: [{ values: axisS },
        { values: function (u, v) { return v.map(function (x) { return x + " MB"; }); }, size: 70 }],
      legend: { live: true },
      cursor: { drag: { x: true, y: false } },
    };
    memPlot = new uPlot(opts, [m.xs].concat(m.cols), document.getElementById("memory"));
    var pd = document.getElementById("peak-detail");
    if (DATA.peaks.length) {
      pd.textContent = DATA.peaks.map(function (p) {
        return "Concurrent peak " + fmtMB(p.total_rss_mb) + " at " + fmtS(p.t) +
          (p.group ? " of " + p.group : "") + ": " + p.workers.map(function (w) {
            return w.worker + " " + fmtMB(w.rss_mb) + (w.test ? " in " + w.test : " (idle)");
          }).join("; ");
      }).join("\n");
    } else {
      pd.textContent = "No concurrent peak in this report (it is measured when tests run in more than one worker).";
    }
  }

  function drawCpu() {
    var pts = ROWS.map(function (r, i) { return i; }).filter(function (i) {
      return ROWS[i][DUR] != null && ROWS[i][CPU] != null;
    });
    pts.sort(function (a, b) { return ROWS[a][DUR] - ROWS[b][DUR]; });
    var xs = pts.map(function (i) { return Math.max(ROWS[i][DUR], 1e-6); });
    var used = [];
    ROWS.forEach(function (r) { used[r[OUTCOME]] = true; });
    var series = [{ label: "duration", value: function (u, v) { return v == null ? "" : fmtS(v); } }];
    var cols = [];
    OUTCOMES.forEach(function (o, oi) {
      if (!used[oi]) return;
      cols.push(pts.map(function (i) { return ROWS[i][OUTCOME] === oi ? ROWS[i][CPU] : null; }));
      series.push({
        label: o, stroke: OUTCOME_COLOR[oi], paths: function () { return null; },
        points: { show: true, size: 5, fill: OUTCOME_COLOR[oi], width: 0 },
        value: function (u, v) { return v == null ? "" : fmtPct(v); },
      });
    });
    var hover = document.getElementById("cpu-hover");
    var opts = {
      width: chartWidth("cpu"), height: 280, series: series,
      scales: { x: { time: false, distr: 3 }, y: { range: function (u, lo, hi) { return [0, Math.max(100, hi || 0) * 1.05]; } } },
      axes: [{ values: axisS },
        { values: function (u, v) { return v.map(function (x) { return x + " %"; }); }, size: 60 }],
      cursor: { drag: { x: true, y: false } },
      hooks: {
        setCursor: [function (u) {
          var i = u.cursor.idx;
          hover.textContent = i == null ? "\u00a0" : ROWS[pts[i]][TEST] + ": " + fmtS(ROWS[pts[i]][DUR]) +
            ", CPU " + fmtPct(ROWS[pts[i]][CPU]) + " (" + OUTCOMES[ROWS[pts[i]][OUTCOME]] + ")";
        }],
      },
    };
    if (!pts.length) {
      document.getElementById("cpu").textContent = "No test has both a duration and a CPU figure.";
      return;
    }
    cpuPlot = new uPlot(opts, [xs].concat(cols), document.getElementById("cpu"));
  }

  // ------------------------------------------------------------------ table (virtualised)
  var COLS = [
    { key: TEST, label: "Test", text: true, width: "34%", fmt: null },
    { key: LANE, label: "Worker", text: true, width: "8%", fmt: function (v) { return LANES[v].name; } },
    { key: OUTCOME, label: "Outcome", text: true, width: "8%", fmt: null },
    { key: DUR, label: "Duration s", fmt: 4 },
    { key: SETUP, label: "Setup s", fmt: 4 },
    { key: CALL, label: "Call s", fmt: 4 },
    { key: TEARDOWN, label: "Teardown s", fmt: 4 },
    { key: CPU, label: "CPU %", fmt: 1 },
    { key: MSTART, label: "Mem start MB", fmt: 1 },
    { key: MPEAK, label: "Mem peak MB", fmt: 1 },
    { key: MDELTA, label: "Mem \u0394 MB", fmt: 1 },
    { key: START, label: "Start s", fmt: 3 },
  ];
  // the noise certificate: a Wait column only when the report has one; a contended test's
  // wait is marked, and the filter finds it by "contended"
  if (ROWS.some(function (r) { return r[WAIT] != null; })) {
    COLS[0].width = "29%";  // room for it
    var afterCpu = COLS.map(function (c) { return c.key; }).indexOf(CPU) + 1;
    COLS.splice(afterCpu, 0, { key: WAIT, label: "Wait s", width: "7%", fmt: 4,
      cls: function (v, i) { return ROWS[i][CONTENDED] ? "contended" : null; },
      title: function (v, i) { return waitText(ROWS[i]); } });
  }
  // executions and subtests: columns only when the report has them
  var anyRuns = ROWS.some(function (r) { return r[RUNS] > 1; });
  var anySubtests = ROWS.some(function (r) { return r[SUBTESTS] != null; });
  if (anyRuns || anySubtests) COLS[0].width = "26%";  // room for the columns below
  if (anySubtests) {
    COLS.splice(3, 0, { key: SUBTESTS, label: "Subtests p/f/s", text: true, width: "7%",
      fmt: function (v) { return v ? v.join(" / ") : ""; },
      title: function (v) { return v ? "subtests: " + subtestsText(v) : ""; } });
  }
  if (anyRuns) {
    COLS.splice(3, 0, { key: RUNS, label: "Runs", width: "4%", fmt: 0,
      title: function (v, i) {
        return v > 1 ? "executed " + v + " times: " + execsOf[i].map(function (k) {
          return OUTCOMES[EXECS[k][X_OUTCOME]];
        }).join(", ") + "; the times are the sums over the executions" : "";
      } });
  }
  // what the filter also finds a row by: the outcomes of its executions ("rerun")
  var rowTags = ROWS.map(function (r, i) {
    return (execsOf[i] ? "executed more than once " + execsOf[i].map(function (k) {
      return OUTCOMES[EXECS[k][X_OUTCOME]];
    }).join(" ") : "") + (r[CONTENDED] ? " contended" : "");
  });
  var ROW_H = 24, OVERSCAN = 12;
  var view = ROWS.map(function (r, i) { return i; }), sortCol = DUR, sortDir = -1;
  var wrap = document.getElementById("table-wrap"), body = document.getElementById("table-body");
  var head = document.getElementById("table-head");
  var laneNames = LANES.map(function (l) { return l.name.toLowerCase(); });
  var lowerNames = null;

  function buildHead() {
    COLS.forEach(function (c) {
      var th = el("th", c.text ? "text" : null, c.label);
      if (c.width) th.style.width = c.width;
      th.dataset.key = c.key;
      th.addEventListener("click", function () {
        if (sortCol === c.key) sortDir = -sortDir;
        else { sortCol = c.key; sortDir = c.text ? 1 : -1; }
        applyView();
      });
      head.appendChild(th);
    });
    var sel = document.getElementById("outcome-filter");
    OUTCOMES.forEach(function (o, i) {
      if (!ROWS.some(function (r) { return r[OUTCOME] === i; })) return;
      var opt = el("option", null, o);
      opt.value = String(i);
      sel.appendChild(opt);
    });
  }

  function sortKey(i) {
    var v = ROWS[i][sortCol];
    if (sortCol === LANE) return laneNames[v];
    if (sortCol === OUTCOME) return OUTCOMES[v];
    if (sortCol === SUBTESTS) return v ? v[1] * 1e9 + v[0] + v[2] : null;  // failed ones first
    return v;
  }

  function applyView() {
    var q = document.getElementById("filter").value.trim().toLowerCase();
    var oSel = document.getElementById("outcome-filter").value;
    var o = oSel === "" ? -1 : Number(oSel);
    if (q && !lowerNames) lowerNames = ROWS.map(function (r) { return r[TEST].toLowerCase(); });
    view = [];
    for (var i = 0; i < ROWS.length; i++) {
      var r = ROWS[i];
      if (o >= 0 && r[OUTCOME] !== o) continue;
      if (q && lowerNames[i].indexOf(q) < 0 && laneNames[r[LANE]].indexOf(q) < 0 &&
        OUTCOMES[r[OUTCOME]].indexOf(q) < 0 && rowTags[i].indexOf(q) < 0) continue;
      view.push(i);
    }
    var keys = new Array(ROWS.length);
    view.forEach(function (i) { keys[i] = sortKey(i); });
    view.sort(function (a, b) {
      var x = keys[a], y = keys[b];
      if (x == null || y == null) return x == null ? (y == null ? a - b : 1) : -1; // n/a last
      if (x < y) return -sortDir;
      if (x > y) return sortDir;
      return a - b;
    });
    Array.prototype.forEach.call(head.children, function (th) {
      if (Number(th.dataset.key) === sortCol) th.setAttribute("aria-sort", sortDir > 0 ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
    });
    document.getElementById("count").textContent = view.length === ROWS.length
      ? ROWS.length.toLocaleString("en") + " tests"
      : view.length.toLocaleString("en") + " of " + ROWS.length.toLocaleString("en") + " tests";
    wrap.scrollTop = 0;
    renderRows();
  }

  function spacer(h) {
    var tr = el("tr", "spacer"), td = el("td");
    td.colSpan = COLS.length;
    td.style.height = h + "px";
    tr.appendChild(td);
    return tr;
  }

  function renderRows() {
    var headH = head.offsetHeight || 28;
    var first = Math.max(0, Math.floor((wrap.scrollTop - headH) / ROW_H) - OVERSCAN);
    var count = Math.ceil(wrap.clientHeight / ROW_H) + 2 * OVERSCAN;
    var last = Math.min(view.length, first + count);
    var frag = document.createDocumentFragment();
    if (first > 0) frag.appendChild(spacer(first * ROW_H));
    for (var k = first; k < last; k++) {
      var ri = view[k], r = ROWS[ri], tr = el("tr");
      COLS.forEach(function (c) {
        var v = r[c.key], td;
        if (c.key === TEST) {
          td = el("td", "text test");
          if (FLAMES && FLAMES[v]) {
            var fb = el("button", "flame-button", "profile");
            fb.type = "button";
            fb.title = "Show this test's flame graph";
            fb.addEventListener("click", showFlame.bind(null, v));
            td.appendChild(fb);
          }
          td.appendChild(el("span", null, v));
          td.title = v;
        } else if (c.key === OUTCOME) {
          td = el("td", "text");
          var b = el("span", "o", OUTCOMES[v]);
          b.style.background = OUTCOME_COLOR[v];
          td.appendChild(b);
        } else if (typeof c.fmt === "function") {
          td = el("td", "text", c.fmt(v));
        } else {
          td = el("td", null, v == null ? "n/a" : v.toFixed(c.fmt));
        }
        if (c.title) td.title = c.title(v, ri);
        if (c.cls && c.cls(v, ri)) td.classList.add(c.cls(v, ri));
        tr.appendChild(td);
      });
      tr.addEventListener("mouseenter", function () { tr.style.background = "#f6f8fa"; });
      tr.addEventListener("mouseleave", function () { tr.style.background = ""; });
      frag.appendChild(tr);
    }
    if (last < view.length) frag.appendChild(spacer((view.length - last) * ROW_H));
    body.textContent = "";
    body.appendChild(frag);
  }

  // ------------------------------------------------------------------ profiles (--perf-profile)
  function showFlame(name) {
    var panel = document.getElementById("flame-panel");
    // the SVG is the page's own: made by perfmon from the profiles, every text escaped
    document.getElementById("flame").innerHTML = FLAMES[name];
    panel.hidden = false;
    panel.dataset.test = name;
    panel.scrollIntoView({ block: "start" });
  }

  var pending = false;
  wrap.addEventListener("scroll", function () {
    if (pending) return;
    pending = true;
    requestAnimationFrame(function () { pending = false; renderRows(); });
  });
  var filterTimer = null;
  document.getElementById("filter").addEventListener("input", function () {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(applyView, ROWS.length > 2000 ? 120 : 0);
  });
  document.getElementById("outcome-filter").addEventListener("change", applyView);

  // ------------------------------------------------------------------ history (--db)
  var HIST = DATA.history, histPlots = [];
  var METRIC_INFO = {
    duration: { label: "duration", color: "#0969da", scale: "s", fmt: fmtS },
    cpu_time: { label: "CPU time", color: "#1a7f37", scale: "s", fmt: fmtS },
    peak_mb: { label: "peak MB", color: "#8250df", scale: "mb", fmt: fmtMB },
  };
  function fmtChange(c, metric) {
    var f = METRIC_INFO[metric].fmt, run = HIST.runs[c.run] || {};
    var pct = c.change_percent == null ? "" : (c.change_percent > 0 ? "+" : "") + c.change_percent.toFixed(1) + " % ";
    return metric + " " + pct + c.kind + " at " + run.short + " (run " + run.id + "): " + f(c.before) +
      " \u2192 " + f(c.after) + ", p = " + c.p_value;
  }
  function commitAxis(labelOf) {
    return function (u, vals) {
      return vals.map(function (v) { return Number.isInteger(v) ? labelOf(v) : ""; });
    };
  }
  function changePlugin(marks) {
    return {
      hooks: {
        draw: function (u) {
          var g = u.ctx, top = u.bbox.top, bot = top + u.bbox.height;
          marks.forEach(function (m, k) {
            var x = Math.round(u.valToPos(m.c.run - 0.5, "x", true));
            g.save();
            g.strokeStyle = m.c.kind === "regression" ? "#cf222e" : "#2da44e";
            g.lineWidth = 1.5 * devicePixelRatio;
            g.setLineDash([5 * devicePixelRatio, 4 * devicePixelRatio]);
            g.beginPath(); g.moveTo(x, top); g.lineTo(x, bot); g.stroke();
            g.setLineDash([]);
            g.fillStyle = g.strokeStyle;
            g.font = 11 * devicePixelRatio + "px sans-serif";
            var pct = m.c.change_percent == null ? "" : (m.c.change_percent > 0 ? "+" : "") + m.c.change_percent.toFixed(0) + " % ";
            var label = pct + METRIC_INFO[m.metric].label;
            var tw = g.measureText(label).width;
            var lx = x + tw + 8 > u.bbox.left + u.bbox.width ? x - tw - 6 : x + 6;
            g.fillText(label, lx, top + (12 + 13 * k) * devicePixelRatio);
            g.restore();
          });
        },
      },
    };
  }
  function drawTrend(t, host) {
    var box = el("div", "trend");
    var h = el("h4", null, t.test);
    var nChanges = 0;
    Object.keys(t.metrics).forEach(function (m) { nChanges += t.metrics[m].changes.length; });
    if (nChanges) h.appendChild(el("span", "badge", nChanges === 1 ? "change point" : nChanges + " change points"));
    box.appendChild(h);
    var chartDiv = el("div", "trend-chart");
    box.appendChild(chartDiv);
    host.appendChild(box);
    var metrics = Object.keys(METRIC_INFO).filter(function (m) { return t.metrics[m]; });
    var xsSet = {};
    metrics.forEach(function (m) { t.metrics[m].x.forEach(function (x) { xsSet[x] = true; }); });
    var xs = Object.keys(xsSet).map(Number).sort(function (a, b) { return a - b; });
    var pos = {};
    xs.forEach(function (x, i) { pos[x] = i; });
    var cols = [], series = [{ label: "commit", value: function (u, v) {
      var r = HIST.runs[v]; return r ? r.short + " (run " + r.id + ")" : ""; } }];
    var axes = [{ values: commitAxis(function (v) { var r = HIST.runs[v]; return r ? r.short : ""; }), size: 40 }];
    var marks = [], scaled = {};
    metrics.forEach(function (m) {
      var info = METRIC_INFO[m], col = xs.map(function () { return null; });
      t.metrics[m].x.forEach(function (x, k) { col[pos[x]] = t.metrics[m].y[k]; });
      cols.push(col);
      series.push({ label: info.label, stroke: info.color, width: 1.5, scale: info.scale, spanGaps: true,
        points: { show: true, size: 4 }, value: function (u, v) { return v == null ? "" : info.fmt(v); } });
      if (!scaled[info.scale]) {  // one axis per unit: CPU time shares the duration's seconds
        var first = axes.length === 1;
        scaled[info.scale] = true;
        axes.push({ scale: info.scale, side: first ? 3 : 1, size: 78, grid: { show: first },
          stroke: info.color,
          values: function (u, vals) { return vals.map(function (v) { return v == null ? "" : info.fmt(v); }); } });
      }
      t.metrics[m].changes.forEach(function (c) { marks.push({ metric: m, c: c }); });
    });
    var opts = {
      width: Math.max(300, chartDiv.clientWidth || box.clientWidth - 12 || 540), height: 200,
      series: series, axes: axes, plugins: [changePlugin(marks)],
      scales: { x: { time: false, range: function (u, lo, hi) { return [lo - 0.5, hi + 0.5]; } },
        s: { range: function (u, lo, hi) { return [0, hi * 1.15 || 1]; } },
        mb: { range: function (u, lo, hi) { return [0, hi * 1.15 || 1]; } } },
      legend: { live: true },
    };
    histPlots.push({ plot: new uPlot(opts, [xs].concat(cols), chartDiv), div: chartDiv });
    if (marks.length) {
      var p = el("p", "changes");
      marks.forEach(function (m, k) {
        if (k) p.appendChild(document.createElement("br"));
        p.appendChild(el("span", m.c.kind, "\u25CF change point: " + fmtChange(m.c, m.metric)));
      });
      box.appendChild(p);
    }
  }
  function drawSuite() {
    var S = HIST.suite, div = document.getElementById("suite-chart");
    var xs = S.map(function (g, i) { return i; });
    var opts = {
      width: chartWidth("suite-chart"), height: 240,
      series: [
        { label: "commit", value: function (u, v) { var g = S[v]; return g ? g.short + " (" + g.runs + " run" + (g.runs === 1 ? "" : "s") + ")" : ""; } },
        { label: "suite duration (median)", stroke: "#0969da", width: 2, points: { show: true, size: 6 }, spanGaps: true,
          value: function (u, v) { return v == null ? "" : fmtS(v); } },
        { label: "fastest run", stroke: "#8c959f", width: 1, dash: [4, 3], points: { show: false }, spanGaps: true,
          value: function (u, v) { return v == null ? "" : fmtS(v); } },
        { label: "slowest run", stroke: "#8c959f", width: 1, dash: [4, 3], points: { show: false }, spanGaps: true,
          value: function (u, v) { return v == null ? "" : fmtS(v); } },
      ],
      scales: { x: { time: false, range: function (u, lo, hi) { return [lo - 0.5, hi + 0.5]; } },
        y: { range: function (u, lo, hi) { return [0, hi * 1.15 || 1]; } } },
      axes: [{ values: commitAxis(function (v) { return S[v] ? S[v].short : ""; }), size: 40 },
        { values: axisS, size: 78 }],
      legend: { live: true },
    };
    histPlots.push({ plot: new uPlot(opts, [xs, S.map(function (g) { return g.duration; }),
      S.map(function (g) { return g.min; }), S.map(function (g) { return g.max; })], div), div: div });
  }
  function drawHistory() {
    if (!HIST) return;
    document.getElementById("history-panel").hidden = false;
    var cap = document.getElementById("history-caption");
    var n = HIST.runs.length;
    if (!n) {
      cap.textContent = "The history store holds no runs" + (HIST.own_machine ? " of this report's machine" : "") +
        ": nothing to draw yet. Runs are added by --perf-history URL or perfmon history import.";
      document.getElementById("suite-caption").textContent = "No runs.";
      document.getElementById("trends-caption").textContent = "No runs.";
      return;
    }
    var m = HIST.machine || {};
    cap.textContent = "The last " + n + " run" + (n === 1 ? "" : "s") + " (of at most " + HIST.window + ") in the history store on " +
      (HIST.own_machine ? "this report's machine" : "the machine of the newest run (the store has no run of this report's machine)") +
      (m.cpu_model ? " (" + m.cpu_model + ", " + m.cpu_count + " CPUs)" : "") +
      ", from " + HIST.runs[0].started_at + " to " + HIST.runs[n - 1].started_at + ".";
    document.getElementById("suite-caption").textContent = "Each point is one commit, in the order of its first run: " +
      "the median of its runs' wall time; the dashed lines are its fastest and slowest run. Hover for the commit.";
    drawSuite();
    var g = HIST.gates;
    var tc = document.getElementById("trends-caption");
    var drawn = HIST.tests.length;
    tc.textContent = HIST.with_history
      ? "Drawn: " + drawn + " of the " + HIST.with_history + " tests of this report that have passed results in the store: " +
        "every test with a detected change point (" + HIST.changed + ") and the " + HIST.max_tests + " slowest. " +
        "Each point is one run (passed results only), labelled by commit. Change points (dashed lines: red slower, green faster) " +
        "are found as perfmon history check finds them: E-divisive means, p \u2264 " + HIST.p_max +
        ", and at least " + Object.keys(g).map(function (k) {
          return (g[k].rel * 100).toFixed(0) + " % and " + METRIC_INFO[k].fmt(g[k].abs) + " for " + METRIC_INFO[k].label; }).join(", ") + "."
      : "None of this report's tests has passed results in these runs.";
    var host = document.getElementById("trends");
    HIST.tests.forEach(function (t) { drawTrend(t, host); });
  }

  // ------------------------------------------------------------------ start
  drawHeadline();
  buildHead();
  applyView();
  drawTimeline();
  drawMemory();
  drawCpu();
  drawHistory();
  var resizeTimer = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(function () {
      drawTimeline();
      if (memPlot) memPlot.setSize({ width: chartWidth("memory"), height: 300 });
      if (cpuPlot) cpuPlot.setSize({ width: chartWidth("cpu"), height: 280 });
      histPlots.forEach(function (h) {
        h.plot.setSize({ width: Math.max(300, h.div.clientWidth), height: h.plot.height });
      });
    }, 100);
  });
  // for tests and the curious: where row i's bar is on the screen (client coordinates)
  function barPoint(bi) {
    var b = BARS[bi], rect = tCanvas.getBoundingClientRect(), geom = tCanvas._geom;
    return { x: rect.left + LABEL_W + (b[B_START] + (b[B_DUR] || 0) / 2) * geom.sx,
      y: rect.top + AXIS_H + b[B_LANE] * (LANE_H + LANE_GAP) + LANE_H / 2 };
  }
  window.perfmon = {
    rows: ROWS.length,
    // the timeline bars of row i: one, or one per execution of a test executed more than once
    bars: function (i) {
      var out = [];
      for (var bi = firstBar[i]; bi < BARS.length && BARS[bi][B_ROW] === i; bi++) {
        var b = BARS[bi], p = barPoint(bi);
        out.push({ lane: LANES[b[B_LANE]].name, start: b[B_START], duration: b[B_DUR],
          outcome: OUTCOMES[b[B_OUTCOME]], attempt: b[B_EXEC] >= 0 ? EXECS[b[B_EXEC]][X_ATTEMPT] : null,
          x: p.x, y: p.y });
      }
      return out;
    },
    outcomeColor: function (o) { return OUTCOME_COLOR[OUTCOMES.indexOf(o)]; },
    historyCharts: function () { return histPlots.length; },
    timelinePoint: function (i) {  // the middle of row i's (first) bar
      return barPoint(firstBar[i]);
    },
  };
  window.perfmonReadyMs = performance.now();
  document.body.setAttribute("data-ready", "1");
})();
