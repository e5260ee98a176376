// disyre report.html: a 2D canvas viewer of scans, anomaly maps and lesion labels.
// Plain JavaScript, no library, no network: the page's volumes are zlib-compressed uint8
// arrays in base64 <script> blocks, inflated with the browser's DecompressionStream.
(function () {
  "use strict";

  var DATA = JSON.parse(document.getElementById("report-data").textContent);
  var METHODS = DATA.methods || [];
  var CASES = DATA.cases || [];
  var VIEWS = [
    // name, fixed axis, row axis (drawn top = high index), column axis, edge letters
    { name: "axial", fixed: 0, row: 1, col: 2, letters: ["L", "R", "A", "P"] },
    { name: "coronal", fixed: 1, row: 0, col: 2, letters: ["L", "R", "S", "I"] },
    { name: "sagittal", fixed: 2, row: 0, col: 1, letters: ["P", "A", "S", "I"] }
  ];
  var VIEW_PX = METHODS.length > 2 ? 210 : (METHODS.length > 1 ? 270 : 340);
  var GROUPS = { heldout: "held-out", transfer: "out-of-range", scan: "scan" };
  var OUTLINE = "#00e5ff";

  var state = {
    current: -1, pos: [0, 0, 0], opacity: 0.7, outline: true, crosshair: true,
    sortKey: null, sortDir: 1, listMethod: METHODS.length ? METHODS[0].name : null,
    thr: {}, vol: null, token: 0
  };

  // ---------------------------------------------------------------------------- helpers
  function el(tag, attrs, children) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") { e.textContent = attrs[k]; } else { e.setAttribute(k, attrs[k]); }
    });
    (children || []).forEach(function (c) { if (c) { e.appendChild(c); } });
    return e;
  }
  function fmt(x, nd) {
    return (x === null || x === undefined || !isFinite(x)) ? "\u2013" : Number(x).toFixed(nd);
  }
  function pct(key) { return (100 * Number(key)).toFixed(0) + " %"; }
  function maxOf(a) { var m = -Infinity; for (var i = 0; i < a.length; i++) { if (a[i] > m) { m = a[i]; } } return m; }

  function decode(id) {
    var node = document.getElementById(id);
    if (!node) { return Promise.resolve(null); }
    var bin = atob(node.textContent.trim());
    var bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) { bytes[i] = bin.charCodeAt(i); }
    var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Response(stream).arrayBuffer().then(function (b) { return new Uint8Array(b); });
  }

  // hot colour ramp for the overlay: dark red -> red -> orange -> light yellow
  var LUT = (function () {
    var stops = [[0, 139, 0, 0], [0.35, 255, 32, 0], [0.7, 255, 160, 0], [1, 255, 255, 128]];
    var lut = new Uint8Array(256 * 3);
    for (var i = 0; i < 256; i++) {
      var t = i / 255, k = 0;
      while (k < stops.length - 2 && t > stops[k + 1][0]) { k++; }
      var a = stops[k], b = stops[k + 1], u = (t - a[0]) / (b[0] - a[0]);
      for (var c = 0; c < 3; c++) { lut[3 * i + c] = Math.round(a[c + 1] + u * (b[c + 1] - a[c + 1])); }
    }
    return lut;
  })();

  function thresholdMax(m) {
    var hi = 0;
    CASES.forEach(function (c) {
      var v = c.volume && c.volume.maps[m.name];
      if (v && v.scale > hi) { hi = v.scale; }
    });
    Object.keys(m.thresholds || {}).forEach(function (k) { hi = Math.max(hi, 1.25 * m.thresholds[k]); });
    return hi > 0 ? hi : 1;
  }
  function initialThreshold(m) {
    var th = m.thresholds || {};
    if (DATA.default_fpr && th[DATA.default_fpr] !== undefined && th[DATA.default_fpr] !== null) {
      return th[DATA.default_fpr];
    }
    return thresholdMax(m) / 2;
  }

  // ---------------------------------------------------------------------------- case list
  function sortValue(c, key) {
    var m = (c.metrics || {})[state.listMethod] || {};
    if (key === "subject") { return c.subject; }
    if (key === "group") { return groupName(c); }
    if (key === "dice") { return m.dice && c.n_lesion > 0 ? m.dice[DATA.default_fpr] : null; }
    if (key === "ap" && !(c.n_lesion > 0)) { return null; }
    return m[key];
  }
  function sortedIndices() {
    var idx = CASES.map(function (_, i) { return i; });
    if (!state.sortKey) { return idx; }
    var key = state.sortKey, dir = state.sortDir;
    idx.sort(function (a, b) {
      var va = sortValue(CASES[a], key), vb = sortValue(CASES[b], key);
      var na = va === null || va === undefined || (typeof va === "number" && !isFinite(va));
      var nb = vb === null || vb === undefined || (typeof vb === "number" && !isFinite(vb));
      if (na || nb) { return na === nb ? a - b : (na ? 1 : -1); }  // missing values last
      if (typeof va === "string") { return dir * va.localeCompare(vb, undefined, { numeric: true }) || a - b; }
      return dir * (va - vb) || a - b;
    });
    return idx;
  }
  function groupName(c) {
    return GROUPS[c.group] || (c.n_lesion > 0 ? "lesion" : "healthy");
  }
  function hasColumn(key) {
    if (key === "group") {  // only when it tells cases apart
      return new Set(CASES.map(groupName)).size > 1;
    }
    return CASES.some(function (c) {
      var v = sortValue(c, key);
      return v !== null && v !== undefined;
    });
  }
  function buildList(aside) {
    var cols = [["subject", "case"], ["group", "group"], ["ap", "AP"],
                ["dice", "Dice" + (DATA.default_fpr ? " @ " + pct(DATA.default_fpr) : "")],
                ["score", "score"]].filter(function (c) { return c[0] === "subject" || hasColumn(c[0]); });
    var head = el("tr", {}, cols.map(function (c) {
      var th = el("th", { "data-sort": c[0], title: "sort by " + c[1], text: c[1] });
      th.addEventListener("click", function () {
        if (state.sortKey === c[0]) { state.sortDir = -state.sortDir; } else {
          state.sortKey = c[0]; state.sortDir = (c[0] === "subject" || c[0] === "group") ? 1 : -1;
        }
        renderList();
      });
      return th;
    }));
    var table = el("table", { id: "case-table" }, [el("thead", {}, [head]), el("tbody")]);
    if (METHODS.length > 1) {
      var sel = el("select", { id: "list-method", "aria-label": "numbers of the method" },
        METHODS.map(function (m) { return el("option", { value: m.name, text: m.name }); }));
      sel.addEventListener("change", function () { state.listMethod = sel.value; renderList(); });
      aside.appendChild(el("div", { class: "note", style: "padding:4px 8px" },
        [document.createTextNode("numbers of "), sel]));
    }
    aside.appendChild(table);
    table._cols = cols;
  }
  function renderList() {
    var table = document.getElementById("case-table");
    var cols = table._cols;
    table.querySelectorAll("th").forEach(function (th) {
      th.className = th.getAttribute("data-sort") === state.sortKey
        ? (state.sortDir > 0 ? "sorted-asc" : "sorted-desc") : "";
    });
    var body = table.querySelector("tbody");
    body.textContent = "";
    sortedIndices().forEach(function (i) {
      var c = CASES[i];
      var tr = el("tr", { "data-index": String(i) }, cols.map(function (col) {
        var v = sortValue(c, col[0]);
        if (col[0] === "subject") { return el("td", { text: c.subject }); }
        if (col[0] === "group") { return el("td", { class: "group", text: groupName(c) }); }
        return el("td", { class: "num", text: fmt(v, 3) });
      }));
      if (i === state.current) { tr.className = "current"; }
      tr.addEventListener("click", function () { selectCase(i); });
      body.appendChild(tr);
    });
  }

  // ---------------------------------------------------------------------------- viewer
  function buildPanel(panel) {
    var opacity = el("input", { type: "range", id: "opacity", min: "0", max: "1", step: "0.05",
                                value: String(state.opacity), "aria-label": "overlay opacity" });
    opacity.addEventListener("input", function () { state.opacity = Number(opacity.value); drawAll(); });
    var outline = el("input", { type: "checkbox", id: "outline", checked: "checked" });
    outline.addEventListener("change", function () { state.outline = outline.checked; drawAll(); });
    var cross = el("input", { type: "checkbox", id: "crosshair", checked: "checked" });
    cross.addEventListener("change", function () { state.crosshair = cross.checked; drawAll(); });
    panel.appendChild(el("div", { class: "controls" }, [
      el("label", {}, [document.createTextNode("overlay opacity"), opacity]),
      el("label", {}, [outline, document.createTextNode("label outline")]),
      el("label", {}, [cross, document.createTextNode("crosshair")]),
      el("span", { class: "legend" }, [el("span", { class: "ramp" }),
        document.createTextNode("map above the threshold  "), el("span", { class: "swatch" }),
        document.createTextNode("lesion label")]),
      el("span", { class: "note", text: "wheel or sliders: scroll; click: move the other views" })
    ]));
    panel.appendChild(el("div", { class: "case-title", id: "case-title" }));
    METHODS.forEach(function (m, mi) {
      state.thr[m.name] = initialThreshold(m);
      var tmax = thresholdMax(m);
      var slider = el("input", { type: "range", class: "threshold", min: "0", max: String(tmax),
                                 step: "any", value: String(state.thr[m.name]),
                                 "aria-label": "threshold of " + m.name });
      var out = el("output", { class: "thr-value" });
      var buttons = Object.keys(m.thresholds || {}).map(function (k) {
        var b = el("button", { type: "button", title: "threshold at " + pct(k) + " healthy FPR",
                               text: pct(k) });
        b.addEventListener("click", function () {
          state.thr[m.name] = m.thresholds[k]; slider.value = String(m.thresholds[k]); update();
        });
        return b;
      });
      function update() { out.textContent = thrText(m); drawMethod(mi); }
      slider.addEventListener("input", function () { state.thr[m.name] = Number(slider.value); update(); });
      out.textContent = thrText(m);
      var views = el("div", { class: "views" }, VIEWS.map(function (v, vi) {
        var canvas = el("canvas", { class: "view", "data-view": v.name, width: "10", height: "10",
                                    "aria-label": v.name + " view of " + m.name });
        var s = el("input", { type: "range", class: "slice", "data-view": v.name, min: "0", max: "0",
                              step: "1", value: "0", "aria-label": v.name + " slice" });
        s.addEventListener("input", function () { state.pos[v.fixed] = Number(s.value); drawAll(); });
        canvas.addEventListener("wheel", function (ev) {
          ev.preventDefault();
          move(v.fixed, ev.deltaY > 0 ? -1 : 1);
        }, { passive: false });
        canvas.addEventListener("click", function (ev) { clickView(vi, canvas, ev); });
        return el("figure", {}, [canvas, el("figcaption", {}, [
          el("span", { class: "vname", text: v.name }), s, el("span", { class: "slice-no" })])]);
      }));
      panel.appendChild(el("div", { class: "method", "data-method": m.name, "data-index": String(mi) }, [
        el("div", { class: "mhead" }, [el("span", { class: "name", text: m.name }),
          el("span", { class: "numbers" }),
          el("span", { class: "thr" }, [document.createTextNode("threshold"), slider, out].concat(buttons))]),
        views]));
    });
    var pp = DATA.post_processing;
    panel.appendChild(el("div", { class: "note", id: "notes" }));
    if (pp !== undefined) {
      document.getElementById("notes").textContent = "Post-processing of the maps: " + ppText(pp);
    }
  }
  function ppText(pp) {
    if (pp === null) { return "not known (maps read from files)."; }
    if (pp.median_filter !== undefined) {
      return pp.median_filter ? "3D median filter of size " + pp.median_filter + "." : "none.";
    }
    return Object.keys(pp).map(function (k) { return k + ": " + ppText(pp[k]); }).join(" ");
  }
  function thrText(m) {
    var t = state.thr[m.name], th = m.thresholds || {}, tag = "";
    Object.keys(th).forEach(function (k) {
      if (th[k] !== null && Math.abs(th[k] - t) <= 1e-9 * Math.max(1, Math.abs(t))) {
        tag = " (" + pct(k) + " healthy FPR)";
      }
    });
    return "map > " + t.toFixed(4) + tag;
  }
  function move(axis, d) {
    if (!state.vol) { return; }
    var n = state.vol.meta.shape[axis];
    state.pos[axis] = Math.max(0, Math.min(n - 1, state.pos[axis] + d));
    drawAll();
  }
  function geometry(v, meta) {
    var sh = meta.shape, sp = meta.spacing;
    var ext = Math.max(sh[0] * sp[0], sh[1] * sp[1], sh[2] * sp[2]);
    var s = VIEW_PX / ext;
    var row = document.querySelector(".views");  // the three views side by side if they fit
    var avail = row ? row.clientWidth - 24 : 0;
    if (avail > 240) { s = Math.min(s, avail / (2 * sh[2] * sp[2] + sh[1] * sp[1])); }
    return { rows: sh[v.row], cols: sh[v.col], w: Math.max(1, Math.round(sh[v.col] * sp[v.col] * s)),
             h: Math.max(1, Math.round(sh[v.row] * sp[v.row] * s)) };
  }
  function clickView(vi, canvas, ev) {
    if (!state.vol) { return; }
    var v = VIEWS[vi], g = geometry(v, state.vol.meta);
    var r = canvas.getBoundingClientRect();
    var col = Math.floor((ev.clientX - r.left) / r.width * g.cols);
    var row = g.rows - 1 - Math.floor((ev.clientY - r.top) / r.height * g.rows);
    state.pos[v.col] = Math.max(0, Math.min(g.cols - 1, col));
    state.pos[v.row] = Math.max(0, Math.min(g.rows - 1, row));
    drawAll();
  }

  function index(meta, z, y, x) { return (z * meta.shape[1] + y) * meta.shape[2] + x; }
  function voxel(v, fixedIdx, row, col) {
    var p = [0, 0, 0];
    p[v.fixed] = fixedIdx; p[v.row] = row; p[v.col] = col;
    return p;
  }

  function drawView(mi, vi) {
    var m = METHODS[mi], v = VIEWS[vi], vol = state.vol;
    var box = document.querySelector('.method[data-index="' + mi + '"]');
    var canvas = box.querySelectorAll("canvas.view")[vi];
    var slider = box.querySelectorAll("input.slice")[vi];
    var ctx = canvas.getContext("2d");
    if (!vol || !vol.maps[m.name]) {
      canvas.width = 160; canvas.height = 60;
      ctx.fillStyle = "#0d1117"; ctx.fillRect(0, 0, 160, 60);
      ctx.fillStyle = "#9aa4b5"; ctx.font = "12px sans-serif";
      ctx.fillText(vol ? "no map of this case" : "no volume embedded", 10, 34);
      return;
    }
    var meta = vol.meta, g = geometry(v, meta), fixed = state.pos[v.fixed];
    slider.max = String(meta.shape[v.fixed] - 1);
    slider.value = String(fixed);
    slider.parentNode.querySelector(".slice-no").textContent = (fixed + 1) + "/" + meta.shape[v.fixed];
    if (canvas.width !== g.w || canvas.height !== g.h) { canvas.width = g.w; canvas.height = g.h; }
    var map = vol.maps[m.name], scale = meta.maps[m.name].scale;
    var ct = Math.floor(state.thr[m.name] * 255 / scale);
    var img = vol.image, lab = vol.label, a = state.opacity;
    var off = document.createElement("canvas");
    off.width = g.cols; off.height = g.rows;
    var octx = off.getContext("2d"), id = octx.createImageData(g.cols, g.rows), px = id.data;
    var span = Math.max(1, 255 - ct);
    for (var r = 0; r < g.rows; r++) {
      var row = g.rows - 1 - r;
      for (var c = 0; c < g.cols; c++) {
        var p = voxel(v, fixed, row, c), k = index(meta, p[0], p[1], p[2]), o = 4 * (r * g.cols + c);
        var base = img ? img[k] : Math.round(map[k] * 0.6);
        var R = base, G = base, B = base;
        var code = map[k];
        if (code > ct) {
          var li = 3 * Math.min(255, Math.round((code - ct) / span * 255));
          R = Math.round(base * (1 - a) + LUT[li] * a);
          G = Math.round(base * (1 - a) + LUT[li + 1] * a);
          B = Math.round(base * (1 - a) + LUT[li + 2] * a);
        }
        px[o] = R; px[o + 1] = G; px[o + 2] = B; px[o + 3] = 255;
      }
    }
    octx.putImageData(id, 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(off, 0, 0, g.w, g.h);
    var sx = g.w / g.cols, sy = g.h / g.rows;
    if (lab && state.outline) {
      ctx.beginPath();
      var L = function (rr, cc) {
        if (rr < 0 || cc < 0 || rr >= g.rows || cc >= g.cols) { return 0; }
        var q = voxel(v, fixed, g.rows - 1 - rr, cc);
        return lab[index(meta, q[0], q[1], q[2])];
      };
      for (var rr = -1; rr < g.rows; rr++) {
        for (var cc = -1; cc < g.cols; cc++) {
          var here = L(rr, cc);
          if (here !== L(rr, cc + 1)) { ctx.moveTo((cc + 1) * sx, rr * sy); ctx.lineTo((cc + 1) * sx, (rr + 1) * sy); }
          if (here !== L(rr + 1, cc)) { ctx.moveTo(cc * sx, (rr + 1) * sy); ctx.lineTo((cc + 1) * sx, (rr + 1) * sy); }
        }
      }
      ctx.strokeStyle = OUTLINE; ctx.lineWidth = 1.5; ctx.stroke();
    }
    if (state.crosshair) {
      var cx = (state.pos[v.col] + 0.5) * sx, cy = (g.rows - 1 - state.pos[v.row] + 0.5) * sy;
      ctx.strokeStyle = "rgba(120, 200, 255, 0.45)"; ctx.lineWidth = 1;
      ctx.beginPath(); ctx.moveTo(cx, 0); ctx.lineTo(cx, g.h); ctx.moveTo(0, cy); ctx.lineTo(g.w, cy);
      ctx.stroke();
    }
    ctx.fillStyle = "rgba(230, 236, 245, 0.85)"; ctx.font = "11px sans-serif";
    ctx.textBaseline = "middle";
    ctx.fillText(v.letters[0], 3, g.h / 2); ctx.fillText(v.letters[1], g.w - 10, g.h / 2);
    ctx.textBaseline = "top"; ctx.fillText(v.letters[2], g.w / 2 - 3, 2);
    ctx.textBaseline = "bottom"; ctx.fillText(v.letters[3], g.w / 2 - 3, g.h - 1);
  }
  function drawMethod(mi) { for (var vi = 0; vi < VIEWS.length; vi++) { drawView(mi, vi); } }
  function drawAll() { for (var mi = 0; mi < METHODS.length; mi++) { drawMethod(mi); } }

  function numbers(c, m) {
    var x = (c.metrics || {})[m.name];
    if (!x) { return "not evaluated"; }
    var parts = [];
    if (x.ap !== undefined && c.n_lesion > 0) { parts.push("AP " + fmt(x.ap, 3)); }
    if (x.dice && c.n_lesion > 0) {
      parts.push("Dice " + Object.keys(x.dice).map(function (k) { return pct(k) + ": " + fmt(x.dice[k], 3); }).join(", "));
    }
    if (x.score !== undefined) { parts.push("score " + fmt(x.score, 4)); }
    if (x.lesions && DATA.default_fpr && x.lesions[DATA.default_fpr]) {
      var l = x.lesions[DATA.default_fpr];
      parts.push((c.n_lesion > 0 ? "lesions found " + l[0] + "/" + l[1] + ", " : "") +
                 "FP blobs " + l[2] + " @ " + pct(DATA.default_fpr));
    }
    return parts.join(" \u00b7 ");
  }

  function selectCase(i) {
    var c = CASES[i], token = ++state.token;
    state.current = i;
    renderList();
    document.getElementById("case-title").textContent = c.subject +
      (c.n_lesion > 0 || c.group === "scan" ? "" : " (" + (groupName(c) === "healthy" ? ""
        : groupName(c) + " ") + "healthy scan)");
    METHODS.forEach(function (m, mi) {
      document.querySelector('.method[data-index="' + mi + '"] .numbers').textContent = numbers(c, m);
    });
    var meta = c.volume;
    if (!meta) { state.vol = null; drawAll(); return Promise.resolve(); }
    var names = Object.keys(meta.maps);
    var jobs = [meta.image ? decode("v" + i + "-image") : Promise.resolve(null),
                meta.label ? decode("v" + i + "-label") : Promise.resolve(null)]
      .concat(names.map(function (n) { return decode(meta.maps[n].block); }));
    return Promise.all(jobs).then(function (arr) {
      if (token !== state.token) { return; }
      var maps = {};
      names.forEach(function (n, j) { maps[n] = arr[2 + j]; });
      state.vol = { meta: meta, image: arr[0], label: arr[1], maps: maps };
      state.pos = startPosition(meta, arr[1], maps[names[0]]);
      drawAll();
    });
  }
  function startPosition(meta, lab, map) {
    var sh = meta.shape, n = sh[0] * sh[1] * sh[2];
    var src = lab, want = 1;
    var any = false;
    if (lab) { for (var i = 0; i < n; i++) { if (lab[i]) { any = true; break; } } }
    if (!any) { src = map; want = maxOf(map); }
    var counts = [new Float64Array(sh[0]), new Float64Array(sh[1]), new Float64Array(sh[2])];
    var k = 0;
    for (var z = 0; z < sh[0]; z++) {
      for (var y = 0; y < sh[1]; y++) {
        for (var x = 0; x < sh[2]; x++, k++) {
          if (src && src[k] >= want && want > 0) { counts[0][z]++; counts[1][y]++; counts[2][x]++; }
        }
      }
    }
    return counts.map(function (cnt, ax) {
      var best = -1, at = Math.floor(sh[ax] / 2);
      for (var j = 0; j < cnt.length; j++) { if (cnt[j] > best && cnt[j] > 0) { best = cnt[j]; at = j; } }
      return at;
    });
  }

  // ---------------------------------------------------------------------------- start
  var root = document.getElementById("viewer");
  if (!CASES.length) {
    root.appendChild(el("p", { class: "note", text: "No case to show." }));
    document.body.setAttribute("data-ready", "1");
    return;
  }
  var aside = el("aside");
  var panel = el("div", { class: "panel" });
  root.appendChild(el("div", { class: "layout" }, [aside, panel]));
  buildList(aside);
  buildPanel(panel);
  var first = sortedIndices()[0];
  selectCase(first).then(function () { document.body.setAttribute("data-ready", "1"); });
  window.disyreReport = { selectCase: selectCase, state: state, cases: CASES, methods: METHODS };
})();
