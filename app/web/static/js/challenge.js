/* The public forms' proof of work (/check, /grievance): find the number n such that
   SHA-256(salt + n) is the challenge the registry signed (ALTCHA v1 format), using the
   browser's own WebCrypto. Nothing is loaded from or sent to anyone but the registry: the
   solution goes in the form's hidden "altcha" field, posted with the rest of the form.
   Loaded only when a challenge is due, on a page with one form[data-challenge]. */
(function () {
  "use strict";
  var form = document.querySelector("form[data-challenge]");
  if (!form) return;
  var field = form.querySelector('input[name="altcha"]');
  var status = document.getElementById("challenge-status");
  var button = form.querySelector('button[type="submit"]');
  var subtle = window.crypto && window.crypto.subtle;
  var challenge;
  try {
    challenge = JSON.parse(form.dataset.challenge);
  } catch (e) {
    return;
  }

  function say(key) {
    if (status) status.textContent = status.dataset[key] || "";
  }

  function hex(buffer) {
    var bytes = new Uint8Array(buffer);
    var out = "";
    for (var i = 0; i < bytes.length; i++) out += (bytes[i] < 16 ? "0" : "") + bytes[i].toString(16);
    return out;
  }

  // Digests are asynchronous: ask for a batch at a time so the browser can run them together.
  var BATCH = 256;
  var encoder = new TextEncoder();

  async function solve() {
    if (!subtle) throw new Error("WebCrypto unavailable");
    var max = Number(challenge.maxNumber) || 1000000;
    for (var start = 0; start <= max; start += BATCH) {
      var end = Math.min(start + BATCH - 1, max);
      var jobs = [];
      for (var n = start; n <= end; n++) {
        jobs.push(subtle.digest("SHA-256", encoder.encode(challenge.salt + n)));
      }
      var digests = await Promise.all(jobs);
      for (var j = 0; j < digests.length; j++) {
        if (hex(digests[j]) === challenge.challenge) return start + j;
      }
    }
    throw new Error("no solution");
  }

  function payload(number) {
    return btoa(JSON.stringify({
      algorithm: challenge.algorithm,
      challenge: challenge.challenge,
      number: number,
      salt: challenge.salt,
      signature: challenge.signature
    }));
  }

  say("working");
  var solved = solve().then(function (number) {
    field.value = payload(number);
    say("done");
    return true;
  }, function () {
    say("failed");
    return false;
  });

  var sending = false;
  form.addEventListener("submit", function (event) {
    if (field.value) return; // already solved: the form goes as it is
    event.preventDefault();
    if (sending) return;
    sending = true;
    button.setAttribute("aria-disabled", "true");
    say("working");
    solved.then(function (ok) {
      sending = false;
      button.removeAttribute("aria-disabled");
      if (ok) form.submit();
    });
  });
})();
