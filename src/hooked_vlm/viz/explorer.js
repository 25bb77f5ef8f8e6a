// The explorer page's script (hooked_vlm.viz.explorer). Reads the JSON in #explorer-data,
// draws five plotly figures for the selected (token, layer, head, picture) and redraws them on
// every selection: a click on a token, a slider, a select, a click on a layer panel or a
// layer x head cell, a URL fragment (#token=2&layer=5&head=all&panel=0), or a message from
// the notebook widget that hosts the page in an iframe. window.hookedVlmExplorer exposes
// select(), state() and focusMap() to that widget and to the tests.
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("explorer-data").textContent);
  var T = D.shape[0], L = D.shape[1], H = D.shape[2], P = D.shape[3];
  var G = D.groups.length, K = D.lens.k;
  var GROUP_COLORS = ["#1f77b4", "#d62728", "#7f7f7f", "#2ca02c", "#bcbd22"];

  function bytes(b64) {
    var s = atob(b64), out = new Uint8Array(s.length);
    for (var i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  }
  var W = D.weights;
  var heads = bytes(W.heads), headScale = new Float32Array(bytes(W.heads_scale).buffer);
  var summed = bytes(W.sum), sumScale = new Float32Array(bytes(W.sum_scale).buffer);
  var shares = new Uint16Array(bytes(D.shares).buffer);
  var lensIds = D.lens.id_bytes === 2 ? new Uint16Array(bytes(D.lens.ids).buffer)
                                      : new Uint32Array(bytes(D.lens.ids).buffer);
  var lensProbs = bytes(D.lens.probs);

  // attention weight of query t on every patch at layer l, head h (h < 0: summed over heads)
  function weights(t, l, h) {
    var out = new Float32Array(P), q, s, base;
    if (h < 0) { base = (t * L + l) * P; q = summed; s = sumScale[t * L + l]; }
    else { base = ((t * L + l) * H + h) * P; q = heads; s = headScale[(t * L + l) * H + h]; }
    for (var p = 0; p < P; p++) { var x = q[base + p] / 255; out[p] = s * x * x; }
    return out;
  }
  // share of query t's attention per key group at layer l (h < 0: mean over heads)
  function groupShares(t, l, h) {
    var out = [], g, k;
    for (g = 0; g < G; g++) out.push(0);
    var first = h < 0 ? 0 : h, last = h < 0 ? H - 1 : h;
    for (k = first; k <= last; k++)
      for (g = 0; g < G; g++) out[g] += shares[((t * L + l) * H + k) * G + g] / 65535;
    return out.map(function (v) { return v / (last - first + 1); });
  }
  var IMAGE = D.groups.indexOf("image"), GATE = D.groups.indexOf("gate");
  function reading(t, l, h) {  // image side = image + gate
    var base = ((t * L + l) * H + h) * G;
    return (shares[base + IMAGE] + shares[base + GATE]) / 65535;
  }
  function onGrid(values, panel) {  // [rows][cols] from per-patch values
    var z = [];
    for (var r = 0; r < panel.rows; r++) {
      var row = [];
      for (var c = 0; c < panel.cols; c++) row.push(values[panel.index[r * panel.cols + c]]);
      z.push(row);
    }
    return z;
  }

  var state = {token: T - 1, layer: Math.floor(L / 2), head: -1, panel: 0};

  function clamp(v, lo, hi) { return Math.max(lo, Math.min(hi, v)); }
  function select(change, quiet) {
    var next = Object.assign({}, state);
    Object.keys(change || {}).forEach(function (key) {
      if (!(key in state)) return;
      var v = change[key];
      if (key === "head" && (v === "all" || v === null)) v = -1;
      v = parseInt(v, 10);
      if (isNaN(v)) return;
      next[key] = v;
    });
    next.token = clamp(next.token, 0, T - 1);
    next.layer = clamp(next.layer, 0, L - 1);
    next.head = clamp(next.head, -1, H - 1);
    next.panel = clamp(next.panel, 0, D.panels.length - 1);
    var changed = JSON.stringify(next) !== JSON.stringify(state);
    state = next;
    render();
    if (changed && !quiet) announce();
    return state;
  }
  function announce() {
    var h = state.head < 0 ? "all" : state.head;
    var frag = "#token=" + state.token + "&layer=" + state.layer + "&head=" + h +
               "&panel=" + state.panel;
    // a page hosted in the widget's iframe (about:srcdoc) has no URL of its own to update
    if (location.protocol !== "about:" && location.hash !== frag)
      history.replaceState(null, "", frag);
    if (window.parent !== window)
      window.parent.postMessage({source: "hooked-vlm-explorer", state: state}, "*");
  }
  function fromHash() {
    var change = {};
    location.hash.replace(/^#/, "").split("&").forEach(function (part) {
      var kv = part.split("=");
      if (kv.length === 2) change[decodeURIComponent(kv[0])] = decodeURIComponent(kv[1]);
    });
    return change;
  }

  // ---------------------------------------------------------------- static parts of the page
  function text(id, value) { document.getElementById(id).textContent = value; }
  text("title", D.title);
  document.title = D.title;
  text("facts", L + " layers x " + H + " heads; " + P + " image patches; gate: " + D.gate +
       ". Next token: " + D.next_tokens.map(function (n) {
         return n[0] + " " + n[1].toFixed(3); }).join(", "));
  var tokenSpans = [];
  (function tokens() {
    var box = document.getElementById("tokens"), queryAt = {};
    D.queries.forEach(function (pos, i) { queryAt[pos] = i; });
    var i = 0, image = 0;
    while (i < D.tokens.length) {
      var group = D.token_groups[i], span = document.createElement("span");
      if (group === "image" || group === "row") {
        var j = i;
        while (j < D.tokens.length && (D.token_groups[j] === "image" ||
               D.token_groups[j] === "row")) j++;
        image++;
        span.className = "img";
        span.textContent = "[image " + image + ": " + (j - i) + " tokens]";
        i = j;
      } else {
        if (group !== "pad") {
          span.textContent = D.tokens[i];
          span.title = "position " + i + " (" + group + ")";
          if (i in queryAt) {
            span.className = "q";
            span.dataset.token = queryAt[i];
            tokenSpans[queryAt[i]] = span;
            span.addEventListener("click", function (e) {
              select({token: e.target.dataset.token});
            });
          } else span.className = group === "eoi" ? "t gate" : "t";
        }
        i++;
      }
      box.appendChild(span);
    }
  })();
  var tokenSlider = document.getElementById("token-slider");
  tokenSlider.max = T - 1;
  tokenSlider.addEventListener("input", function () { select({token: tokenSlider.value}); });
  var layerSlider = document.getElementById("layer-slider");
  layerSlider.max = L - 1;
  layerSlider.addEventListener("input", function () { select({layer: layerSlider.value}); });
  var headSelect = document.getElementById("head-select");
  headSelect.add(new Option("all heads (sum)", "-1"));
  for (var h = 0; h < H; h++) headSelect.add(new Option("head " + h, String(h)));
  headSelect.addEventListener("change", function () { select({head: headSelect.value}); });
  var panelSelect = document.getElementById("panel-select");
  D.panels.forEach(function (p, i) { panelSelect.add(new Option(p.label, String(i))); });
  panelSelect.addEventListener("change", function () { select({panel: panelSelect.value}); });
  if (D.panels.length < 2) document.getElementById("panel-control").style.display = "none";
  text("notes", D.notes.join(" "));

  // ---------------------------------------------------------------- figures
  var CONFIG = {displayModeBar: false, responsive: false};
  function pictureTraces(panel, axis, z, extra) {
    var suffix = axis === 1 ? "" : String(axis), traces = [];
    if (panel.picture)
      traces.push({type: "image", source: panel.picture, xaxis: "x" + suffix,
                   yaxis: "y" + suffix, hoverinfo: "skip"});
    traces.push(Object.assign({type: "heatmap", z: z, x0: panel.x0, dx: panel.dx,
                               y0: panel.y0, dy: panel.dy, xaxis: "x" + suffix,
                               yaxis: "y" + suffix,
                               coloraxis: "coloraxis"}, extra || {}));
    return traces;
  }
  function pictureAxes(layout, panel, axis, domainX, domainY) {
    var suffix = axis === 1 ? "" : String(axis);
    layout["xaxis" + suffix] = {domain: domainX, range: [-0.5, panel.width - 0.5],
                                visible: false, anchor: "y" + suffix};
    layout["yaxis" + suffix] = {domain: domainY, range: [panel.height - 0.5, -0.5],
                                visible: false, anchor: "x" + suffix,
                                scaleanchor: "x" + suffix};
  }
  function tileLines(panel, axis) {
    var suffix = axis === 1 ? "" : String(axis), lines = [], k;
    var left = panel.x0 - panel.dx / 2, top = panel.y0 - panel.dy / 2;
    var w = panel.cols * panel.dx, ht = panel.rows * panel.dy;
    for (k = 1; k < panel.tiles[0]; k++) {
      var y = top + ht * k / panel.tiles[0];
      lines.push({type: "line", xref: "x" + suffix, yref: "y" + suffix, x0: left,
                  x1: left + w, y0: y, y1: y, line: {color: "white", width: 1}});
    }
    for (k = 1; k < panel.tiles[1]; k++) {
      var x = left + w * k / panel.tiles[1];
      lines.push({type: "line", xref: "x" + suffix, yref: "y" + suffix, x0: x, x1: x,
                  y0: top, y1: top + ht, line: {color: "white", width: 1}});
    }
    return lines;
  }
  function headLabel() { return state.head < 0 ? "all heads (sum)" : "head " + state.head; }
  function tokenLabel() { return JSON.stringify(D.tokens[D.queries[state.token]]); }

  function maps() {  // [layer][rows][cols] on the selected picture panel, and their maximum
    var panel = D.panels[state.panel], out = [], max = 0;
    for (var l = 0; l < L; l++) {
      var z = onGrid(weights(state.token, l, state.head), panel);
      z.forEach(function (row) { row.forEach(function (v) { if (v > max) max = v; }); });
      out.push(z);
    }
    return {maps: out, max: max || 1};
  }

  function drawFocus(m) {
    var panel = D.panels[state.panel], layout = {
      title: {text: "layer " + state.layer + ", " + headLabel(), font: {size: 13}},
      width: 380, height: 400, margin: {l: 10, r: 10, t: 40, b: 10},
      coloraxis: {colorscale: D.colorscale, cmin: 0, cmax: m.max,
                  colorbar: {thickness: 10, len: 0.8}},
      shapes: tileLines(panel, 1)};
    pictureAxes(layout, panel, 1, [0, 1], [0, 1]);
    Plotly.react("fig-focus", pictureTraces(panel, 1, m.maps[state.layer], {
      hovertemplate: "%{z:.4f}<extra></extra>"}), layout, CONFIG);
  }

  function drawLayers(m) {
    var panel = D.panels[state.panel], cols = Math.min(L, 8), rows = Math.ceil(L / cols);
    var side = 110, gap = 0.012, traces = [], annotations = [], shapes = [];
    var layout = {width: cols * side + 20, height: rows * (side + 18) + 30,
                  margin: {l: 5, r: 5, t: 25, b: 5}, showlegend: false,
                  coloraxis: {colorscale: D.colorscale, cmin: 0, cmax: m.max, showscale: false}};
    for (var l = 0; l < L; l++) {
      var r = Math.floor(l / cols), c = l % cols, axis = l + 1;
      var dx = [c / cols + gap, (c + 1) / cols - gap];
      var dy = [1 - (r + 1) / rows + gap * 3, 1 - r / rows - gap * 3];
      pictureAxes(layout, panel, axis, dx, dy);
      traces = traces.concat(pictureTraces(panel, axis, m.maps[l], {
        hovertemplate: "layer " + l + ": %{z:.4f}<extra></extra>"}));
      annotations.push({text: (l === state.layer ? "<b>layer " + l + "</b>" : "layer " + l),
                        x: (dx[0] + dx[1]) / 2, y: dy[1], xref: "paper", yref: "paper",
                        yanchor: "bottom", showarrow: false, font: {size: 10}});
      if (l === state.layer)
        shapes.push({type: "rect", xref: "paper", yref: "paper", x0: dx[0], x1: dx[1],
                     y0: dy[0], y1: dy[1], line: {color: "#1f77b4", width: 3}});
    }
    layout.annotations = annotations;
    layout.shapes = shapes;
    layout.title = {text: "every layer, " + headLabel() + " (one colour scale)",
                    font: {size: 12}, y: 0.995};
    Plotly.react("fig-layers", traces, layout, CONFIG);
  }

  function drawShares() {
    var per = [], l, g;
    for (l = 0; l < L; l++) per.push(groupShares(state.token, l, state.head));
    var layers = [];
    for (l = 0; l < L; l++) layers.push(l);
    var traces = [];
    for (g = 0; g < G; g++) {
      var name = D.groups[g] === "gate" ? "gate (" + D.gate + ")" : D.groups[g];
      traces.push({type: "bar", name: name, x: layers,
                   y: per.map(function (s) { return s[g]; }),
                   marker: {color: GROUP_COLORS[g % GROUP_COLORS.length]},
                   hovertemplate: name + ", layer %{x}: %{y:.3f}<extra></extra>"});
    }
    Plotly.react("fig-shares", traces, {
      barmode: "stack", width: 480, height: 370, margin: {l: 50, r: 10, t: 40, b: 90},
      title: {text: "shares of " + tokenLabel() + "'s attention, " +
              (state.head < 0 ? "mean over heads" : "head " + state.head), font: {size: 12}},
      xaxis: {title: {text: "layer"}, dtick: L > 16 ? 4 : 1}, yaxis: {range: [0, 1]},
      legend: {orientation: "h", y: -0.28},
      shapes: [{type: "rect", xref: "x", yref: "paper", x0: state.layer - 0.5,
                x1: state.layer + 0.5, y0: 0, y1: 1, line: {color: "#1f77b4", width: 2}}],
    }, CONFIG);
  }

  function drawHeads() {
    var z = [], l, h;
    for (l = 0; l < L; l++) {
      var row = [];
      for (h = 0; h < H; h++) row.push(reading(state.token, l, h));
      z.push(row);
    }
    var cell = state.head < 0 ? {x0: -0.5, x1: H - 0.5} : {x0: state.head - 0.5,
                                                           x1: state.head + 0.5};
    Plotly.react("fig-heads", [{type: "heatmap", z: z, colorscale: "Viridis", zmin: 0,
      hovertemplate: "layer %{y}, head %{x}: %{z:.3f} on the image<extra></extra>"}], {
      width: Math.max(320, 60 + 16 * H), height: Math.max(300, 90 + 12 * L),
      margin: {l: 50, r: 10, t: 40, b: 40},
      title: {text: "image reading per head (click a cell)", font: {size: 12}},
      xaxis: {title: {text: "head"}}, yaxis: {title: {text: "layer"}, autorange: "reversed"},
      shapes: [{type: "rect", x0: cell.x0, x1: cell.x1, y0: state.layer - 0.5,
                y1: state.layer + 0.5, line: {color: "red", width: 2}}],
    }, CONFIG);
  }

  function drawLens() {
    var panel = D.panels[state.panel], l = state.layer, p, j;
    var prob = new Float32Array(P), word = [], hover = [];
    for (p = 0; p < P; p++) {
      var base = (l * P + p) * K, parts = [];
      prob[p] = lensProbs[base] / 255;
      word.push(D.lens.vocab[lensIds[base]]);
      for (j = 0; j < K; j++)
        parts.push(D.lens.vocab[lensIds[base + j]] + " " + (lensProbs[base + j] / 255).toFixed(2));
      hover.push(parts.join("<br>"));
    }
    var layout = {
      title: {text: "layer " + l + ": top token of each patch (colour: its probability)",
              font: {size: 12}},
      width: 560, height: 560, margin: {l: 10, r: 10, t: 40, b: 10},
      coloraxis: {colorscale: "Blues", reversescale: true, cmin: 0, cmax: 1,
                  colorbar: {thickness: 10}},
      shapes: tileLines(panel, 1)};
    pictureAxes(layout, panel, 1, [0, 1], [0, 1]);
    var fontSize = Math.max(6, Math.min(12, Math.floor(480 / panel.cols / 3)));
    Plotly.react("fig-lens", pictureTraces(panel, 1, onGrid(prob, panel), {
      text: onGrid(word, panel), customdata: onGrid(hover, panel),
      texttemplate: "%{text}", textfont: {size: fontSize}, opacity: panel.picture ? 0.6 : 1,
      hovertemplate: "%{customdata}<extra></extra>"}), layout, CONFIG);
  }

  function render() {
    var m = maps();
    drawFocus(m);
    drawLayers(m);
    drawShares();
    drawHeads();
    drawLens();
    tokenSpans.forEach(function (s, i) { s.classList.toggle("sel", i === state.token); });
    tokenSlider.value = state.token;
    layerSlider.value = state.layer;
    text("layer-label", String(state.layer));
    headSelect.value = String(state.head);
    panelSelect.value = String(state.panel);
    text("selection", "token " + tokenLabel() + " (position " + D.queries[state.token] +
         "), layer " + state.layer + ", " + headLabel());
    document.body.dataset.state = JSON.stringify(state);
  }

  // clicks inside figures: a layer panel selects its layer, a cell its layer and head
  function bindClicks() {
    document.getElementById("fig-layers").on("plotly_click", function (e) {
      var axis = e.points[0].xaxis._id.replace("x", "");
      select({layer: (axis ? parseInt(axis, 10) : 1) - 1});
    });
    document.getElementById("fig-heads").on("plotly_click", function (e) {
      select({layer: e.points[0].y, head: e.points[0].x});
    });
  }

  window.hookedVlmExplorer = {
    select: select,
    state: function () { return Object.assign({}, state); },
    // the focus map as drawn: [rows][cols] for the current selection
    focusMap: function () { return maps().maps[state.layer]; },
  };
  window.addEventListener("hashchange", function () { select(fromHash()); });
  window.addEventListener("message", function (e) {
    if (e.data && e.data.source === "hooked-vlm-explorer-host") select(e.data.select, true);
  });
  select(fromHash(), true);
  bindClicks();
  document.body.dataset.ready = "1";
})();
