/* Shared by the page and the console: building elements, calling the API, formatting. */
"use strict";

var dfd = window.dfd || {};
window.dfd = dfd;

/* h("p", {class: "x", onclick: fn}, "text", child...): an element, text always as text. */
dfd.h = function (tag, props) {
  var el = document.createElement(tag);
  var attrs = props || {};
  Object.keys(attrs).forEach(function (key) {
    var value = attrs[key];
    if (value === null || value === undefined || value === false) return;
    if (key.slice(0, 2) === "on" && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "text") {
      el.textContent = value;
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  });
  for (var i = 2; i < arguments.length; i++) dfd.append(el, arguments[i]);
  return el;
};

dfd.append = function (el, child) {
  if (child === null || child === undefined || child === false) return;
  if (Array.isArray(child)) {
    child.forEach(function (c) { dfd.append(el, c); });
  } else if (typeof child === "string" || typeof child === "number") {
    el.appendChild(document.createTextNode(String(child)));
  } else {
    el.appendChild(child);
  }
};

/* An error from the API: the problem document's detail, its status and type. */
dfd.ApiError = function (status, detail, type) {
  this.status = status;
  this.message = detail;
  this.type = type || "";
};

/* fetch + JSON; rejects with an ApiError carrying the problem's detail. */
dfd.api = function (path, options, key) {
  var opts = options || {};
  var headers = opts.headers || {};
  if (key) headers.Authorization = "Bearer " + key;
  opts.headers = headers;
  return fetch(path, opts).then(
    function (response) {
      return response.text().then(function (text) {
        var body = null;
        try { body = text ? JSON.parse(text) : null; } catch (e) { body = null; }
        if (!response.ok) {
          var detail = (body && (body.detail || body.title)) || response.statusText || "request failed";
          throw new dfd.ApiError(response.status, detail, body && body.type);
        }
        return body;
      });
    },
    function () {
      throw new dfd.ApiError(0, "the service did not answer; check your connection and try again");
    }
  );
};

dfd.pct = function (value) {
  return value === null || value === undefined ? "n/a" : Math.round(value * 100) + "%";
};

dfd.seconds = function (value) {
  if (value === null || value === undefined) return "n/a";
  if (value < 1) return Math.round(value * 1000) + " ms";
  if (value < 120) return value.toFixed(1) + " s";
  return Math.round(value / 60) + " min";
};

dfd.when = function (iso) {
  if (!iso) return "n/a";
  var date = new Date(iso);
  return isNaN(date.getTime()) ? iso : date.toLocaleString();
};

dfd.store = {
  get: function (name) {
    try { return window.sessionStorage.getItem(name) || ""; } catch (e) { return ""; }
  },
  set: function (name, value) {
    try {
      if (value) window.sessionStorage.setItem(name, value);
      else window.sessionStorage.removeItem(name);
    } catch (e) { /* storage off: the key lasts as long as the page */ }
  }
};
