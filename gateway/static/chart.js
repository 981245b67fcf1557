/* The interactive timeline: one point per sampled second, the threshold and the
   inconclusive band drawn; hover, tap or arrow keys pick a second. */
"use strict";

(function () {
  var NS = "http://www.w3.org/2000/svg";
  var W = 800, H = 260, L = 44, R = 12, T = 12, B = 34;
  var SERIES = [
    {key: "score", name: "overall", colour: "#141414", width: 2.5},
    {key: "visual", name: "faces", colour: "#1f77b4", width: 1.5},
    {key: "audio", name: "voice", colour: "#d95f02", width: 1.5},
    {key: "lipsync", name: "lips vs speech", colour: "#2ca02c", width: 1.5}
  ];

  function svg(tag, attrs) {
    var el = document.createElementNS(NS, tag);
    Object.keys(attrs || {}).forEach(function (k) { el.setAttribute(k, attrs[k]); });
    return el;
  }

  /* timeline(points, {threshold, band, onSelect}) -> {element, select(i)} */
  dfd.timeline = function (points, options) {
    var threshold = options.threshold, band = options.band;
    var t0 = points[0].time_s, t1 = points[points.length - 1].time_s;
    var span = Math.max(t1 - t0, 1e-6);
    var x = function (t) { return points.length === 1 ? L + (W - L - R) / 2 : L + (t - t0) / span * (W - L - R); };
    var y = function (v) { return T + (1 - v) * (H - T - B); };

    var root = svg("svg", {viewBox: "0 0 " + W + " " + H, class: "timeline", role: "slider",
      tabindex: "0", "aria-label": "Timeline of scores, one point per second; use the arrow keys to pick a second",
      "aria-valuemin": "0", "aria-valuemax": String(points.length - 1), "aria-valuenow": "0"});
    var upper = Math.min(threshold + band, 1), lower = Math.max(threshold - band, 0);
    root.appendChild(svg("rect", {x: L, y: y(upper), width: W - L - R, height: y(lower) - y(upper), class: "band"}));
    [0, 0.25, 0.5, 0.75, 1].forEach(function (v) {
      root.appendChild(svg("line", {x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid"}));
      var label = svg("text", {x: L - 6, y: y(v) + 4, class: "axis", "text-anchor": "end"});
      label.textContent = Math.round(v * 100) + "%";
      root.appendChild(label);
    });
    root.appendChild(svg("line", {x1: L, x2: W - R, y1: y(threshold), y2: y(threshold), class: "threshold"}));
    var tick = Math.max(1, Math.ceil(span / 8));
    for (var t = Math.ceil(t0); t <= t1 + 1e-9; t += tick) {
      var tl = svg("text", {x: x(t), y: H - 12, class: "axis", "text-anchor": "middle"});
      tl.textContent = t + " s";
      root.appendChild(tl);
    }
    SERIES.forEach(function (s) {
      var d = "", pen = "M";
      points.forEach(function (p) {
        var v = p[s.key];
        if (v === null || v === undefined) { pen = "M"; return; }
        d += pen + x(p.time_s).toFixed(1) + " " + y(v).toFixed(1) + " ";
        pen = "L";
      });
      if (d) root.appendChild(svg("path", {d: d, fill: "none", stroke: s.colour, "stroke-width": s.width, class: "series"}));
      if (s.key === "score") {
        points.forEach(function (p) {
          if (p.score !== null && p.score !== undefined) {
            root.appendChild(svg("circle", {cx: x(p.time_s), cy: y(p.score), r: 3, fill: s.colour}));
          }
        });
      }
    });
    var cursor = svg("line", {x1: L, x2: L, y1: T, y2: H - B, class: "cursor"});
    root.appendChild(cursor);

    var current = -1;
    function select(i) {
      i = Math.max(0, Math.min(points.length - 1, i));
      if (i === current) return;
      current = i;
      var cx = x(points[i].time_s);
      cursor.setAttribute("x1", cx);
      cursor.setAttribute("x2", cx);
      root.setAttribute("aria-valuenow", String(i));
      root.setAttribute("aria-valuetext", points[i].time_s + " seconds: overall " + dfd.pct(points[i].score));
      options.onSelect(i, points[i]);
    }
    function nearest(clientX) {
      var box = root.getBoundingClientRect();
      var vx = (clientX - box.left) / box.width * W;
      var best = 0, dist = Infinity;
      points.forEach(function (p, i) {
        var dd = Math.abs(x(p.time_s) - vx);
        if (dd < dist) { dist = dd; best = i; }
      });
      return best;
    }
    root.addEventListener("pointermove", function (e) { select(nearest(e.clientX)); });
    root.addEventListener("pointerdown", function (e) { select(nearest(e.clientX)); });
    root.addEventListener("keydown", function (e) {
      var moves = {ArrowLeft: -1, ArrowDown: -1, ArrowRight: 1, ArrowUp: 1};
      if (e.key in moves) select(current + moves[e.key]);
      else if (e.key === "Home") select(0);
      else if (e.key === "End") select(points.length - 1);
      else return;
      e.preventDefault();
    });

    var legend = dfd.h("ul", {class: "legend", "aria-label": "Lines of the chart"},
      SERIES.map(function (s) {
        return dfd.h("li", {}, dfd.h("span", {class: "swatch swatch-" + s.key}), s.name);
      }),
      dfd.h("li", {}, dfd.h("span", {class: "swatch swatch-band"}), "inconclusive band"),
      dfd.h("li", {}, dfd.h("span", {class: "swatch swatch-threshold"}), "threshold " + dfd.pct(threshold)));
    return {element: root, legend: legend, select: select};
  };
})();
