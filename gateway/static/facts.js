/* Facts read from the file, in plain words: Content Credentials (C2PA), tell-tale metadata
   and matches in the bank of known fakes. The raw fields stay one click away. */
"use strict";

(function () {
  var h = dfd.h;
  var ACTIONS = {
    "c2pa.created": "created", "c2pa.edited": "edited", "c2pa.converted": "converted to another format",
    "c2pa.opened": "opened", "c2pa.placed": "combined with other media", "c2pa.cropped": "cropped",
    "c2pa.resized": "resized", "c2pa.color_adjustments": "colour-adjusted", "c2pa.filtered": "filtered",
    "c2pa.drawing": "drawn on", "c2pa.transcoded": "re-encoded", "c2pa.published": "published",
    "c2pa.removed": "had parts removed", "c2pa.repackaged": "repackaged", "c2pa.redacted": "redacted"
  };
  var RELATIONS = {parentOf: "the file it was made from", componentOf: "a part of it", inputTo: "an input to the tool"};

  function date(iso) {
    var d = iso ? new Date(iso) : null;
    return d && !isNaN(d.getTime()) ? d.toLocaleString() : iso || "";
  }

  function who(signer) {
    if (!signer) return "an unnamed signer";
    var name = signer.issuer || signer.common_name || "an unnamed signer";
    if (signer.issuer && signer.common_name && signer.common_name !== signer.issuer) name += " (" + signer.common_name + ")";
    return name;
  }

  function raw(title, value) {
    return h("details", {class: "raw"}, h("summary", {}, title),
      h("pre", {}, JSON.stringify(value, null, 2)));
  }

  /* The Content Credentials as sentences, most important first. */
  dfd.provenanceWords = function (p) {
    if (!p) return [];
    if (!p.present) {
      return [p.supported === false
        ? "This kind of file cannot carry Content Credentials, so there were none to check."
        : "The file carries no Content Credentials (C2PA). Most videos carry none and any re-encode removes them, so this says nothing about whether it is genuine."];
    }
    if (p.error) return ["The file carries Content Credentials, but they could not be read: " + p.error + "."];
    var lines = [];
    var signed = "Signed by " + who(p.signer) + (p.signer && p.signer.time ? " on " + date(p.signer.time) : "");
    if (p.state === "trusted") {
      lines.push(signed + "; the signature checks out, the signer is one this service trusts, and the file was not changed since.");
    } else if (p.state === "valid") {
      lines.push(signed + "; the signature checks out and the file was not changed since. The signer is not one this service is set to trust, so the name on the certificate is not vouched for.");
    } else if (p.tampered) {
      lines.push(signed + ", but the file or its credentials were changed after signing: what was signed is no longer what you have.");
    } else {
      var codes = (p.codes || []).map(function (c) { return c.explanation || c.code; });
      lines.push(signed + ", but the credentials fail validation" + (codes.length ? ": " + codes.join("; ") : "") + ".");
    }
    if (p.ai_generated) {
      var tools = (p.actions || []).filter(function (a) { return a.digital_source_type && /trainedAlgorithmicMedia/.test(a.digital_source_type); })
        .map(function (a) { return a.software_agent; }).filter(Boolean);
      var tool = tools[0] || p.claim_generator || "a tool it does not name";
      lines.push("The file says it was made by an AI tool (" + tool + ")" +
        (p.state === "invalid" ? ", though the credentials that say so do not check out." : "."));
    }
    if (p.claim_generator) lines.push("The credentials were written by " + p.claim_generator + ".");
    var steps = (p.actions || []).map(function (a) {
      return (ACTIONS[a.action] || a.action) + (a.software_agent ? " with " + a.software_agent : "");
    });
    if (steps.length) lines.push("Its recorded history: " + steps.join(", then ") + ".");
    var parts = (p.ingredients || []).map(function (i) {
      return (i.title || "an untitled file") + (RELATIONS[i.relationship] ? " (" + RELATIONS[i.relationship] + ")" : "");
    });
    if (parts.length) lines.push("Made from " + parts.join(", ") + ".");
    return lines;
  };

  /* One known-fake match in words; an audio file's distance is in bits of 32 per step. */
  dfd.matchWords = function (m, audioOnly) {
    var kind = audioOnly ? "recording" : "video";
    var distance = audioOnly
      ? "its sound fingerprint differs from the fake's in " + m.distance + " of 32 bits per step (0 is the same sound, unrelated sound about 16)"
      : "its frames differ from the fake's by " + m.distance + " of 256 bits (0 is the same picture; up to about 31 counts as a copy)";
    return "This " + kind + " matches a known fake in the bank (" + m.label + ", distance " + m.distance +
      (audioOnly ? " of 32" : " of 256") + "): " + distance + "; " + dfd.pct(m.matched_share) +
      " of this " + kind + " matched, covering " + dfd.pct(m.entry_share) + " of the known fake." +
      (m.note ? " The bank's note: " + m.note : "");
  };

  function audioOnly(result) {
    var media = result.media || {};
    return !media.width && !media.video_codec;
  }

  dfd.factsSections = function (result) {
    var out = [];
    var p = result.provenance;
    if (p) {
      out.push(h("section", {"aria-labelledby": "provenance-title", id: "provenance", "data-state": p.present ? (p.state || "unreadable") : "absent"},
        h("h2", {id: "provenance-title"}, "Content Credentials"),
        h("ul", {class: "facts"}, dfd.provenanceWords(p).map(function (l) { return h("li", {}, l); })),
        h("p", {class: "hint"}, "Content Credentials (C2PA) are a signed record some cameras, editors and AI generators attach to a file. They are facts read from the file, not a guess by the detectors."),
        raw("The credentials as read", p)));
    }
    var meta = result.metadata || [];
    if (meta.length) {
      out.push(h("section", {"aria-labelledby": "metadata-title", id: "metadata"},
        h("h2", {id: "metadata-title"}, "What the file says about its making"),
        h("ul", {class: "facts"}, meta.map(function (f) {
          var text = f.explanation.charAt(0).toUpperCase() + f.explanation.slice(1);
          return h("li", {"data-kind": f.kind}, text + (f.value ? " (“" + f.value + "”)" : "") + ".");
        })),
        h("p", {class: "hint"}, "Tags the writing software left in the file. They are easy to change or remove, so they hint at how the file was made but prove nothing."),
        raw("The tags as read", meta)));
    }
    var matches = result.matches;
    if (matches) {
      out.push(h("section", {"aria-labelledby": "matches-title", id: "matches"},
        h("h2", {id: "matches-title"}, "Known fakes"),
        matches.length
          ? h("ul", {class: "facts"}, matches.map(function (m) { return h("li", {class: "match"}, dfd.matchWords(m, audioOnly(result))); }))
          : h("p", {}, "It matches nothing in this service's bank of media already judged fake. The bank holds only what its operators added."),
        matches.length ? raw("The matches as found", matches) : null));
    }
    return out;
  };
})();
