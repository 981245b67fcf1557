/* The page: submit a video, follow its progress, show the result (also at /r/{jobId}). */
"use strict";

(function () {
  var h = dfd.h;
  var cfg = document.body.dataset;
  var THRESHOLD = parseFloat(cfg.threshold) || 0.5;
  var BAND = parseFloat(cfg.band) || 0;
  var POLL_MS = 700;
  var FINAL = {completed: true, failed: true, cancelled: true};
  var STAGE_WORDS = {
    fetch: "Getting the video",
    probe: "Checking the file",
    decode: "Reading frames and sound",
    speech: "Finding speech",
    faces: "Finding faces",
    infer: "Running the detectors",
    evidence: "Drawing the evidence",
    store: "Saving the result"
  };
  /* The worker's stages in pipeline order, as the gateway names them (dfd.states.Stage). */
  var STAGES = (cfg.stages || Object.keys(STAGE_WORDS).join(",")).split(",").map(function (name) {
    return [name, STAGE_WORDS[name] || name];
  });
  var VERDICTS = {
    manipulated: ["Likely manipulated", "The detectors found signs of manipulation."],
    authentic: ["No sign of manipulation found", "The detectors found nothing they recognise as manipulation. That is not proof the video is genuine."],
    inconclusive: ["Inconclusive", "The evidence is too close to call, or there was too little to look at."],
    not_applicable: ["Cannot be judged", "This video has nothing the detectors can examine."]
  };
  var MODALITIES = {
    visual: ["Faces", "Looks at each face for the blending and texture traces that face-swap and face-generation methods leave."],
    audio: ["Voice", "Listens to the speech for traces of synthetic or converted voices."],
    lipsync: ["Lips and speech", "Checks whether the lip movements match the sound (experimental)."]
  };
  var LIMITS = "What the models cannot see: they were trained on particular manipulation methods and may miss new ones; " +
    "heavy compression, small or turned faces and noisy sound weaken them; a video that is real but misleading " +
    "(edited, out of context) is not what they look for.";

  var $ = function (id) { return document.getElementById(id); };
  var following = null;

  function apiKey() { return cfg.auth === "1" ? ($("api-key").value || dfd.store.get("dfd-api-key")) : ""; }

  function showError(message) {
    var el = $("submit-error");
    el.textContent = message;
    el.hidden = !message;
  }

  function submit(request) {
    showError("");
    if (cfg.auth === "1") dfd.store.set("dfd-api-key", $("api-key").value);
    return request.then(function (accepted) {
      window.history.pushState({jobId: accepted.jobId}, "", "/r/" + encodeURIComponent(accepted.jobId));
      follow(accepted.jobId);
    }, function (err) {
      showError(err.message);
      if (err.status === 401) {
        $("options").open = true;
        $("api-key").focus();
      }
    });
  }

  function submitFile(file) {
    if (!file) { showError("Choose a video file first."); $("file").focus(); return; }
    var body = new FormData();
    body.append("file", file, file.name);
    submit(dfd.api("/api/upload?priority=" + encodeURIComponent($("priority").value),
      {method: "POST", body: body}, apiKey()));
  }

  function submitUrl() {
    var url = $("url").value.trim();
    if (!url) { showError("Paste the address of a video first."); $("url").focus(); return; }
    submit(dfd.api("/api/analyze", {
      method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({url: url, priority: $("priority").value})
    }, apiKey()));
  }

  /* --- following a job ---------------------------------------------------------- */
  function follow(jobId) {
    if (following) following.stop();
    var stopped = false, timer = null, source = null;
    following = {jobId: jobId, stop: function () { stopped = true; clearTimeout(timer); if (source) source.close(); }};
    $("submit").hidden = true;
    $("result").hidden = true;
    $("progress").hidden = false;
    renderProgress({status: "waiting", attempt: 1});

    function handle(view) {
      if (stopped) return true;
      if (FINAL[view.status]) {
        following.stop();
        $("progress").hidden = true;
        if (view.status === "completed") renderResult(view);
        else renderFailure(view);
        return true;
      }
      renderProgress(view);
      return false;
    }
    function poll() {
      dfd.api("/api/job/" + encodeURIComponent(jobId), {}, apiKey()).then(function (view) {
        if (!handle(view)) timer = setTimeout(poll, POLL_MS);
      }, function (err) {
        if (stopped) return;
        if (err.status === 404) return renderMissing(jobId);
        if (err.status === 401) return renderMissing(jobId, "This service asks for an API key: enter it under Options and open the link again.");
        $("progress-text").textContent = "Waiting for the service (" + err.message + ")";
        timer = setTimeout(poll, POLL_MS * 3);
      });
    }
    /* Server-sent events: "progress" on each change, "done" with the final view. When the
       stream ends (it lives a bounded time) EventSource reconnects by itself and sends
       Last-Event-ID, so only what changed since comes again. A refused stream (404, 401,
       no events here) or three tries in a row that never open fall back to polling. */
    function listen() {
      var failures = 0;
      source = new EventSource("/api/job/" + encodeURIComponent(jobId) + "/events");
      document.body.dataset.transport = "events";
      source.onopen = function () { failures = 0; };
      source.addEventListener("progress", function (event) {
        failures = 0;
        try { handle(JSON.parse(event.data)); } catch (e) { /* not one of ours */ }
      });
      source.addEventListener("done", function (event) {
        failures = 0;
        var view;
        try { view = JSON.parse(event.data); } catch (e) { return; }
        handle(view);
      });
      source.onerror = function () {
        if (stopped) return;
        failures += 1;
        if (source.readyState === EventSource.CLOSED || failures > 2) {
          source.close();
          source = null;
          document.body.dataset.transport = "polling";
          poll();
        }
      };
    }
    if (cfg.events === "1" && window.EventSource && !apiKey()) listen();
    else { document.body.dataset.transport = "polling"; poll(); }
  }

  function renderProgress(view) {
    var index = -1;
    STAGES.forEach(function (s, i) { if (s[0] === view.stage) index = i; });
    var within = view.progress || 0;
    var overall = view.status === "active" && index >= 0 ? (index + within) / STAGES.length : 0;
    $("progress-bar").value = overall;
    var text;
    if (view.status === "waiting") {
      text = view.attempt > 1 ? "Waiting to try again (attempt " + view.attempt + ")" : "Waiting for a free worker";
    } else {
      text = (index >= 0 ? STAGES[index][1] : "Working") + " (" + Math.round(overall * 100) + "% overall)";
    }
    $("progress-text").textContent = text;
    var list = $("stages");
    var back = $("progress-link");
    if (back && following && following.jobId) {
      back.textContent = "";
      dfd.append(back, ["You can leave this page: ", h("a", {href: "/r/" + encodeURIComponent(following.jobId)},
        window.location.origin + "/r/" + following.jobId), " shows the result when it is ready."]);
    }
    list.textContent = "";
    STAGES.forEach(function (s, i) {
      var state = view.status !== "active" || index < 0 ? "todo" : i < index ? "done" : i === index ? "current" : "todo";
      var item = h("li", {class: "stage stage-" + state, "data-stage": s[0]}, s[1]);
      if (state === "current") {
        item.setAttribute("aria-current", "step");
        dfd.append(item, h("span", {class: "stage-pct"}, " " + Math.round(within * 100) + "%"));
      }
      if (state === "done") dfd.append(item, h("span", {class: "visually-hidden"}, " (done)"));
      list.appendChild(item);
    });
  }

  function showResult(children) {
    var section = $("result");
    section.textContent = "";
    dfd.append(section, children);
    section.hidden = false;
  }

  function renderMissing(jobId, message) {
    $("progress").hidden = true;
    showResult([
      h("h1", {id: "verdict-title"}, "Result not found"),
      h("p", {}, message || ("No job " + jobId + " is known here. Results are kept for a limited time; this one may have expired.")),
      h("p", {}, h("a", {href: "/"}, "Check another video"))
    ]);
  }

  function renderFailure(view) {
    var err = view.error || {type: "internal", message: "no detail recorded"};
    showResult([
      h("h1", {id: "verdict-title"}, err.type === "cancelled" ? "Cancelled" : "The analysis failed"),
      h("p", {class: "error-box"}, err.message),
      h("p", {class: "hint"}, "Error type " + err.type + (err.stage ? ", at the " + err.stage + " stage" : "") +
        (view.attempt > 1 ? ", after " + view.attempt + " attempts" : "") + "."),
      h("p", {}, h("a", {href: "/"}, "Check another video"))
    ]);
  }

  /* --- the result ------------------------------------------------------------- */
  function frameOf(url) {
    var match = /_f(\d+)\.(?:jpe?g|png)(?:$|\?)/.exec(decodeURIComponent(url || ""));
    return match ? parseInt(match[1], 10) : null;
  }

  var linkLife = "";

  function img(src, alt, cls) {
    var el = h("img", {src: src, alt: alt, class: cls || "", loading: "eager", decoding: "async"});
    el.addEventListener("error", function () {
      el.replaceWith(h("p", {class: "img-missing"}, alt + ": the image could not be loaded. Evidence links are signed and expire" +
        linkLife + "; after that the verdict stays but the pictures are gone."));
    });
    return el;
  }

  function verdictSection(result) {
    var words = VERDICTS[result.label] || [result.label, ""];
    var reasons = Array.isArray(result.reasons) ? result.reasons : [];
    return h("section", {class: "verdict verdict-" + result.label, "aria-labelledby": "verdict-title"},
      h("h1", {id: "verdict-title"}, words[0]),
      h("p", {class: "confidence"},
        h("strong", {class: "confidence-value"}, dfd.pct(result.confidence)),
        " estimated probability that this video was manipulated."),
      h("p", {}, words[1] + " Above " + dfd.pct(Math.min(THRESHOLD + BAND, 1)) + " reads as manipulated, below " +
        dfd.pct(Math.max(THRESHOLD - BAND, 0)) + " as authentic; in between is inconclusive."),
      reasons.length ? h("ul", {class: "reasons", "aria-label": "Reasons"}, reasons.map(function (r) {
        return h("li", {}, typeof r === "string" ? r : (r.message || r.reason || JSON.stringify(r)));
      })) : null,
      h("p", {class: "hint limits"}, LIMITS));
  }

  function detectorRows(result) {
    var named = result.detectors && typeof result.detectors === "object" ? Object.keys(result.detectors) : [];
    if (named.length) {
      var list = Array.isArray(result.detectors) ? result.detectors : Object.keys(result.detectors).map(function (k) {
        var d = result.detectors[k]; d.name = d.name || k; return d;
      });
      list = list.filter(function (d) { return d.score != null || !d.used || d.fused; });
      return list.map(function (d) {
        var score = d.calibrated != null ? d.calibrated : d.score;
        return [d.name, d.modality || "", score, d.used, d.reason || d.why || ""];
      });
    }
    return Object.keys(result.modalities || {}).map(function (k) {
      var m = result.modalities[k];
      return [k, k, m.score, m.used, m.used ? "" : "this video gave it nothing to examine (no face, or no usable sound)", m.weight];
    });
  }

  /* What the detectors had to work with, in words, from the result's media summary. */
  function examined(media) {
    var m = media || {}, lines = [];
    var count = function (n, one, many) { return n + " " + (n === 1 ? one : many); };
    if (typeof m.duration_s === "number") {
      lines.push("A video of " + dfd.seconds(m.duration_s) + (m.width && m.height ? ", " + m.width + "×" + m.height + " pixels" : "") + ".");
    }
    if (typeof m.frames_sampled === "number") lines.push(count(m.frames_sampled, "frame", "frames") + " examined, one for each second.");
    if (typeof m.faces === "number") {
      lines.push(m.faces ? count(m.faces, "face", "faces") + " found and scored in those frames." : "No face was found, so nothing was checked for face manipulation.");
    }
    if (typeof m.audio_windows === "number") {
      lines.push(m.audio_windows ? count(m.audio_windows, "stretch", "stretches") + " of about 4 s of sound listened to." : "No sound was examined (no audio track, or too short).");
    }
    if (typeof m.lipsync_clips === "number") {
      lines.push(m.lipsync_clips ? count(m.lipsync_clips, "one-second clip", "one-second clips") + " of face and sound compared." : "Lips and speech were not compared (no face with sound).");
    }
    return lines.length ? h("ul", {class: "examined", "aria-label": "What was examined"}, lines.map(function (l) { return h("li", {}, l); })) : null;
  }

  function detectorsSection(result) {
    var rows = detectorRows(result);
    return h("section", {"aria-labelledby": "detectors-title"},
      h("h2", {id: "detectors-title"}, "What each detector found"),
      examined(result.media),
      h("p", {class: "hint"}, "Each score is that detector's own estimate that the video was manipulated (0% = no sign, 100% = certain). The overall verdict combines the detectors that could run, by their weight."),
      h("ul", {class: "detectors"}, rows.map(function (row) {
        var about = MODALITIES[row[1]] || MODALITIES[row[0]] || [row[0], ""];
        return h("li", {class: "detector" + (row[3] ? "" : " unused"), "data-detector": row[0]},
          h("div", {class: "detector-head"},
            h("strong", {}, about[0] === row[0] ? row[0] : about[0] + " (" + row[0] + ")"),
            h("span", {class: "detector-score"}, row[3] ? dfd.pct(row[2]) : "not used")),
          row[3] ? h("meter", {min: "0", max: "1", value: String(row[2] || 0), "aria-label": row[0] + " score"}) : null,
          h("p", {class: "hint"}, about[1]),
          row[3] && row[5] !== undefined ? h("p", {class: "hint"}, "Weight in the verdict: " + dfd.pct(row[5]) + ".") : null,
          row[3] ? null : h("p", {class: "hint"}, "Not used: " + (row[4] || "no reason given") + "."));
      })));
  }

  function timelineSection(result) {
    var points = (result.evidence && result.evidence.timeline) || [];
    if (!points.length) return null;
    var thumbs = {};
    (result.evidence.thumbnails || []).forEach(function (u) { var f = frameOf(u); if (f !== null) thumbs[f] = u; });
    var readout = h("div", {class: "readout", "aria-live": "polite", id: "timeline-readout"});
    var chart = dfd.timeline(points, {threshold: THRESHOLD, band: BAND, onSelect: function (i, p) {
      readout.textContent = "";
      dfd.append(readout, [
        h("p", {class: "readout-time"}, "At " + p.time_s.toFixed(1) + " s (frame " + p.frame + ")"),
        h("ul", {}, [["overall", p.score], ["faces", p.visual], ["voice", p.audio], ["lips vs speech", p.lipsync]].map(function (s) {
          return h("li", {}, s[0] + ": " + (s[1] === null || s[1] === undefined ? "no reading" : dfd.pct(s[1])));
        })),
        thumbs[p.frame] ? img(thumbs[p.frame], "Frame " + p.frame + " with its faces boxed and scored", "readout-frame")
          : h("p", {class: "hint"}, "No picture kept for this second; the most suspicious frames are shown below.")
      ]);
    }});
    var section = h("section", {"aria-labelledby": "timeline-title"},
      h("h2", {id: "timeline-title"}, "Second by second"),
      h("p", {class: "hint"}, "Each point is one second of the video. The grey band is where a score counts as inconclusive; the dashed line is the threshold."),
      h("p", {class: "hint screen-only"}, "Hover or tap the chart, or focus it and use the arrow keys, to see one second."),
      h("div", {class: "chart-wrap"}, chart.element), chart.legend, readout);
    var worst = 0;
    points.forEach(function (p, i) { if ((p.score || 0) > (points[worst].score || 0)) worst = i; });
    chart.select(worst);
    return section;
  }

  function framesSection(result) {
    var ev = result.evidence || {};
    var thumbs = ev.thumbnails || [], heats = ev.heatmaps || [], sbi = ev.sbi_heatmaps || [];
    if (!thumbs.length && !heats.length && !sbi.length) return null;
    var heatByFrame = {};
    heats.forEach(function (u) { var f = frameOf(u); if (f !== null) heatByFrame[f] = u; });
    return h("section", {"aria-labelledby": "frames-title"},
      h("h2", {id: "frames-title"}, "The most suspicious frames"),
      h("p", {class: "hint"}, "Left: the frame, each face boxed with its score. Right: where the faces detector looked hardest when it scored each face. Warm colours mark the areas that weighed most; they show attention, not proof of an edit."),
      h("div", {class: "scale", "aria-hidden": "true"}, h("span", {}, "less weight"), h("span", {class: "scale-bar"}), h("span", {}, "more weight")),
      h("ol", {class: "frames"}, thumbs.map(function (u, i) {
        var frame = frameOf(u);
        var heat = frame !== null ? heatByFrame[frame] : heats[i];
        return h("li", {class: "frame-pair"},
          h("figure", {}, img(u, "Frame " + (frame === null ? i + 1 : frame), "evidence"),
            h("figcaption", {}, "Frame " + (frame === null ? "" : frame))),
          heat ? h("figure", {}, img(heat, "Heatmap of frame " + (frame === null ? i + 1 : frame), "evidence"),
            h("figcaption", {}, "Heatmap")) : h("p", {class: "hint"}, "No face in this frame, so no heatmap."));
      })),
      sbi.length ? h("h3", {id: "sbi-frames-title"}, "Where SBI looked") : null,
      sbi.length ? h("p", {class: "hint"}, "The frames the SBI detector found most suspicious, each face boxed with its SBI score and its heatmap over the wider face crop SBI reads.") : null,
      sbi.length ? h("ol", {class: "frames", "aria-labelledby": "sbi-frames-title"}, sbi.map(function (u, i) {
        var frame = frameOf(u);
        var name = "Frame " + (frame === null ? i + 1 : frame);
        return h("li", {class: "frame-pair"},
          h("figure", {}, img(u, "SBI heatmap of " + name.toLowerCase(), "evidence"),
            h("figcaption", {}, "SBI, " + name.toLowerCase())));
      })) : null);
  }

  function tracksSection(result) {
    var ev = result.evidence || {};
    var tracks = ev.tracks || [];
    if (!tracks.length) return null;
    var shown = ev.face_track;
    return h("section", {"aria-labelledby": "tracks-title", id: "tracks"},
      h("h2", {id: "tracks-title"}, tracks.length === 1 ? "The face" : "The " + tracks.length + " faces"),
      h("p", {class: "hint"}, "Each face is followed from frame to frame and scored on its own. The verdict uses the most suspicious face; the frames, heatmaps and the timeline's faces line show that one. Beside each face: the picture of it that scored highest, cut out and straightened as the faces detector saw it."),
      h("ul", {class: "tracks"}, tracks.map(function (t) {
        var isShown = t.track === shown;
        var name = "Face " + (t.track + 1);
        var when = typeof t.thumbnail_s === "number" ? " at " + t.thumbnail_s.toFixed(1) + " s" : "";
        var picture = t.thumbnail
          ? h("figure", {class: "track-thumb"}, img(t.thumbnail, name + ", its most suspicious picture" + when, "track-thumb-img"),
              h("figcaption", {}, when ? when.slice(4) : ""))
          : h("p", {class: "track-thumb track-nothumb hint"}, "No picture kept of this face.");
        return h("li", {class: "track" + (isShown ? " track-shown" : ""), "data-track": t.track},
          picture,
          h("div", {class: "track-text"},
          h("strong", {}, name),
          " seen in " + t.frames + (t.frames === 1 ? " frame" : " frames") + ", from " + t.first_s.toFixed(1) + " s to " + t.last_s.toFixed(1) + " s: ",
          t.score === null || t.score === undefined ? "not scored" : dfd.pct(t.score) + " estimated probability its face was manipulated",
          isShown ? h("span", {class: "track-badge"}, " (shown in the pictures below)") : null,
          t.score !== null && t.score !== undefined ? h("meter", {min: "0", max: "1", value: String(t.score), "aria-label": name + " score"}) : null));
      })));
  }

  function audioSection(result) {
    var ev = result.evidence || {};
    if (!ev.spectrogram) return null;
    var loud = (ev.timeline || []).filter(function (p) { return p.audio !== null && p.audio !== undefined && p.audio > THRESHOLD; });
    return h("section", {"aria-labelledby": "audio-title", id: "audio-evidence"},
      h("h2", {id: "audio-title"}, "The sound"),
      h("p", {class: "hint"}, "The spectrogram shows the sound's pitch (up, in kHz) over time (across): brighter means louder. The strip on top gives each stretch of sound the voice detector scored and its score; stretches above the threshold are outlined in red. Synthetic voices can leave traces there, such as missing high frequencies or too-regular patterns, but the picture itself proves nothing."),
      h("figure", {}, img(ev.spectrogram, "Spectrogram of the sound with the scored stretches marked", "evidence spectrogram"),
        h("figcaption", {}, "Spectrogram and voice scores")),
      h("p", {class: "audio-windows"}, loud.length
        ? "The voice scored above the threshold at " + loud.map(function (p) { return p.time_s.toFixed(0) + " s (" + dfd.pct(p.audio) + ")"; }).join(", ") + "."
        : "No stretch of sound scored above the threshold."),
      voiceChanges(result.voice_changes));
  }

  /* Where the voice changes (null: the check is off); evidence, not part of the score. */
  function voiceChanges(changes) {
    if (!changes) return null;
    return h("p", {class: "voice-changes"}, changes.length
      ? "The voice changes at " + changes.map(function (c) { return c.time_s.toFixed(1) + " s"; }).join(", ") + ": the speech after sounds like another person. Two people talking in turn show this too; it is not part of the score."
      : "One voice throughout the speech long enough to compare.");
  }

  function detailsSection(view) {
    var r = view.result;
    var names = {
      download: "getting the video", probe: "checking the file", decode: "reading frames and sound",
      faces: "finding faces", inference: "running the detectors", evidence: "drawing the evidence",
      duration_s: "length (s)", fps: "frames per second", frames_sampled: "frames examined",
      audio_windows: "sound windows", lipsync_clips: "lip-sync clips", requests: "Triton requests"
    };
    function table(caption, obj, fmt) {
      var keys = Object.keys(obj || {});
      if (!keys.length) return null;
      return h("table", {}, h("caption", {}, caption), h("tbody", {}, keys.map(function (k) {
        var value = obj[k] === null || obj[k] === undefined ? "n/a" : fmt ? fmt(obj[k]) : String(obj[k]);
        return h("tr", {}, h("th", {scope: "row"}, names[k] ? names[k] + " (" + k + ")" : k), h("td", {}, value));
      })));
    }
    var chart = r.evidence && r.evidence.timeline_chart;
    return h("details", {class: "technical"},
      h("summary", {}, "Technical details"),
      h("p", {}, "Job " + view.jobId + ", created " + dfd.when(view.createdAt) + ", finished " + dfd.when(view.updatedAt) + "."),
      chart ? h("figure", {}, img(chart, "Timeline chart", "evidence chart-img"),
        h("figcaption", {}, "The timeline as the worker drew it (overall and per-detector scores per second)")) : null,
      table("The video", r.media),
      table("Models (role: checkpoint@version)", r.models),
      table("Time per stage", r.timings_ms, function (ms) { return dfd.seconds(ms / 1000); }));
  }

  function actions(view) {
    var link = window.location.origin + "/r/" + encodeURIComponent(view.jobId);
    var json = new Blob([JSON.stringify(view, null, 2)], {type: "application/json"});
    var share = h("input", {type: "text", id: "share-link", readonly: true, value: link});
    return h("section", {class: "actions", "aria-label": "Share and save"},
      h("label", {for: "share-link"}, "Link to this result"),
      h("div", {class: "share-row"}, share,
        h("button", {type: "button", id: "copy-link", onclick: function () {
          share.select();
          var done = function () { $("copy-link").textContent = "Copied"; };
          if (navigator.clipboard) navigator.clipboard.writeText(link).then(done, function () { document.execCommand("copy"); done(); });
          else { document.execCommand("copy"); done(); }
        }}, "Copy link")),
      h("p", {class: "hint"}, "The link works as long as the result is kept; evidence images expire sooner."),
      h("div", {class: "button-row"},
        h("a", {class: "button", id: "download-json", href: URL.createObjectURL(json), download: "dfd-" + view.jobId + ".json"}, "Download JSON"),
        h("button", {type: "button", id: "print-report", onclick: function () { window.print(); }}, "Print report"),
        h("a", {class: "button secondary", href: "/"}, "Check another video")));
  }

  function renderResult(view) {
    var r = view.result;
    var life = r.evidence && r.evidence.expires_in_s;
    linkLife = life ? " " + dfd.seconds(life) + " after the analysis" : "";
    document.title = "dfd: " + ((VERDICTS[r.label] || [r.label])[0]) + " (" + dfd.pct(r.confidence) + ")";
    showResult([
      h("p", {class: "print-only report-head"}, "dfd report for job " + view.jobId + ", " + dfd.when(view.updatedAt) + " — " + window.location.origin + "/r/" + view.jobId),
      verdictSection(r),
      actions(view),
      detectorsSection(r),
      timelineSection(r),
      framesSection(r),
      tracksSection(r),
      audioSection(r),
      dfd.factsSections(r),
      detailsSection(view)
    ]);
  }

  /* --- wiring --------------------------------------------------------------------- */
  function route() {
    var match = /^\/r\/([^/]+)\/?$/.exec(window.location.pathname);
    if (match) {
      follow(decodeURIComponent(match[1]));
    } else {
      if (following) following.stop();
      $("progress").hidden = true;
      $("result").hidden = true;
      $("submit").hidden = false;
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (cfg.auth === "1") {
      $("auth-row").hidden = false;
      $("api-key").value = dfd.store.get("dfd-api-key");
    }
    $("upload-form").addEventListener("submit", function (e) { e.preventDefault(); submitFile($("file").files[0]); });
    $("url-form").addEventListener("submit", function (e) { e.preventDefault(); submitUrl(); });
    var drop = $("drop");
    ["dragenter", "dragover"].forEach(function (name) {
      drop.addEventListener(name, function (e) { e.preventDefault(); drop.classList.add("over"); });
    });
    ["dragleave", "drop"].forEach(function (name) {
      drop.addEventListener(name, function () { drop.classList.remove("over"); });
    });
    drop.addEventListener("drop", function (e) {
      e.preventDefault();
      var file = e.dataTransfer && e.dataTransfer.files[0];
      if (file) submitFile(file);
    });
    window.addEventListener("popstate", route);
    window.addEventListener("beforeprint", function () {
      Array.prototype.forEach.call(document.querySelectorAll("details.technical"), function (d) { d.open = true; });
    });
    route();
  });
})();
