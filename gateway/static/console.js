/* The operator console: queues, workers, the last hour, recent jobs with retry and cancel,
   the bank of known fakes. */
"use strict";

(function () {
  var h = dfd.h;
  var $ = function (id) { return document.getElementById(id); };
  var REFRESH_MS = 3000;
  var timer = null;
  var key = dfd.store.get("dfd-admin-key");

  function fail(err) {
    var el = $("console-error");
    el.textContent = err ? err.message : "";
    el.hidden = !err;
    if (err && (err.status === 401 || err.status === 403)) {
      $("panels").hidden = true;
      $("key-form").hidden = false;
      clearTimeout(timer);
    }
  }

  function fill(tableId, rows) {
    var body = $(tableId).querySelector("tbody");
    body.textContent = "";
    rows.forEach(function (row) { body.appendChild(row); });
  }

  function cell(value) { return h("td", {}, value === null || value === undefined ? "" : value); }

  function renderOverview(o) {
    fill("queues", o.queues.map(function (q) {
      return h("tr", {"data-queue": q.name}, h("th", {scope: "row"}, q.name),
        cell(q.waiting), cell(q.scheduled), cell(q.active), cell(q.failed), cell(q.completed));
    }));
    fill("workers", o.workers.length ? o.workers.map(function (w) {
      return h("tr", {"data-worker": w.name}, h("th", {scope: "row"}, w.name), cell(w.state),
        cell(w.jobId ? h("a", {href: "/r/" + encodeURIComponent(w.jobId)}, w.jobId) : "idle"),
        cell(w.stage ? w.stage + (w.progress !== null && w.progress !== undefined ? " " + dfd.pct(w.progress) : "") : ""),
        cell(dfd.when(w.lastHeartbeat)), cell(w.completed + " / " + w.failed));
    }) : [h("tr", {}, h("td", {colspan: "6"}, "No worker is running: jobs wait until one starts (dfd worker)."))]);
    var hour = o.lastHour;
    $("hour-summary").textContent = hour.completed + " completed, " + hour.failed + " failed in the last hour" +
      (hour.completed ? "; time from submission to result: median " + dfd.seconds(hour.latencyP50S) +
        ", 95th percentile " + dfd.seconds(hour.latencyP95S) : "") + ".";
    var max = Math.max.apply(null, hour.perMinute.concat([1]));
    var chart = $("hour-chart");
    chart.textContent = "";
    chart.setAttribute("role", "img");
    chart.setAttribute("aria-label", "Jobs ended per minute over the last hour, oldest on the left");
    hour.perMinute.forEach(function (n) {
      chart.appendChild(h("span", {class: "bar", style: null, title: n + " jobs", "data-n": n}));
    });
    Array.prototype.forEach.call(chart.children, function (bar) {
      bar.style.height = (parseInt(bar.dataset.n, 10) / max * 100) + "%";
    });
  }

  function act(jobId, action) {
    return dfd.api("/api/admin/job/" + encodeURIComponent(jobId) + "/" + action, {method: "POST"}, key)
      .then(function () { fail(null); refresh(); }, fail);
  }

  function renderJobs(list) {
    $("jobs-caption").textContent = "Newest first: " + list.jobs.length + " shown of " + list.total + " matching.";
    fill("jobs", list.jobs.length ? list.jobs.map(function (j) {
      var buttons = [];
      if (j.status === "failed" || j.status === "cancelled") {
        buttons.push(h("button", {type: "button", class: "retry", onclick: function () { act(j.jobId, "retry"); },
          "aria-label": "Retry job " + j.jobId}, "Retry"));
      }
      if (j.status === "waiting") {
        buttons.push(h("button", {type: "button", class: "cancel", onclick: function () { act(j.jobId, "cancel"); },
          "aria-label": "Cancel job " + j.jobId}, "Cancel"));
      }
      var status = j.status + (j.stage && j.status === "active" ? " (" + j.stage + ")" : "");
      return h("tr", {"data-job": j.jobId, "data-status": j.status},
        h("th", {scope: "row"}, h("a", {href: "/r/" + encodeURIComponent(j.jobId), title: j.jobId,
          "aria-label": "Result of job " + j.jobId}, j.jobId.slice(0, 10) + "…")),
        cell(status), cell(j.priority),
        cell(j.label ? j.label + " " + dfd.pct(j.confidence) : ""),
        cell(dfd.when(j.createdAt)), cell(dfd.seconds(j.durationS)),
        cell(j.error ? j.error.type + ": " + j.error.message : ""), cell(buttons));
    }) : [h("tr", {}, h("td", {colspan: "8"}, "No job matches."))]);
  }

  function renderBank(entries) {
    $("bank-caption").textContent = entries.length
      ? "Newest first: " + entries.length + (entries.length === 1 ? " entry." : " entries.")
      : "The bank is empty.";
    fill("bank", entries.map(function (e) {
      return h("tr", {"data-entry": e.id}, h("th", {scope: "row"}, e.label), cell(e.note || ""),
        cell(e.jobId ? h("a", {href: "/r/" + encodeURIComponent(e.jobId), "aria-label": "Result of job " + e.jobId}, e.jobId.slice(0, 10) + "…") : ""),
        cell(dfd.when(e.createdAt)), cell(e.frames + (e.frames === 1 ? " frame" : " frames")),
        cell(h("button", {type: "button", class: "remove", "aria-label": "Remove known fake " + e.label,
          onclick: function () { removeFake(e); }}, "Remove")));
    }));
  }

  function bankMessage(text) { $("bank-message").textContent = text; }

  function removeFake(entry) {
    if (!window.confirm("Remove \u201c" + entry.label + "\u201d from the bank? Later analyses will no longer match it.")) return;
    dfd.api("/api/known-fakes/" + encodeURIComponent(entry.id), {method: "DELETE"}, key).then(function () {
      bankMessage("Removed \u201c" + entry.label + "\u201d.");
      refresh();
    }, function (err) { bankMessage("Not removed: " + err.message); });
  }

  function addFake(form) {
    var body = {jobId: form.jobId.value.trim(), label: form.label.value.trim()};
    if (form.note.value.trim()) body.note = form.note.value.trim();
    if (!body.jobId || !body.label) { bankMessage("Give the job id and a label."); return; }
    dfd.api("/api/known-fakes", {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)}, key)
      .then(function (entry) {
        bankMessage("Added \u201c" + entry.label + "\u201d (" + entry.frames + " hashes).");
        form.reset();
        refresh();
      }, function (err) { bankMessage("Not added: " + err.message); });
  }

  function query() {
    var params = [];
    ["f-status", "f-label", "f-since"].forEach(function (id) {
      var el = $(id);
      if (el.value) params.push(el.name + "=" + encodeURIComponent(el.value));
    });
    return params.length ? "?" + params.join("&") : "";
  }

  function refresh() {
    clearTimeout(timer);
    return Promise.all([
      dfd.api("/api/admin/overview", {}, key),
      dfd.api("/api/admin/jobs" + query(), {}, key),
      dfd.api("/api/known-fakes", {}, key)
    ]).then(function (replies) {
      fail(null);
      $("key-form").hidden = true;
      $("panels").hidden = false;
      renderOverview(replies[0]);
      renderJobs(replies[1]);
      renderBank(replies[2]);
      $("updated").textContent = "Updated " + new Date().toLocaleTimeString() + ".";
      timer = setTimeout(refresh, REFRESH_MS);
    }, fail);
  }

  document.addEventListener("DOMContentLoaded", function () {
    $("key-form").addEventListener("submit", function (e) {
      e.preventDefault();
      key = $("admin-key").value.trim();
      dfd.store.set("dfd-admin-key", key);
      refresh();
    });
    $("filters").addEventListener("change", refresh);
    $("filters").addEventListener("submit", function (e) { e.preventDefault(); refresh(); });
    $("refresh").addEventListener("click", refresh);
    $("bank-form").addEventListener("submit", function (e) { e.preventDefault(); addFake(e.target); });
    $("sign-out").addEventListener("click", function () {
      key = "";
      dfd.store.set("dfd-admin-key", "");
      clearTimeout(timer);
      $("panels").hidden = true;
      $("key-form").hidden = false;
      $("admin-key").value = "";
    });
    if (key) refresh();
  });
})();
