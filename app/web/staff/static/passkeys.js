/* The staff console's passkey ceremonies (WebAuthn): enrolment, sign-in and step-up.

   The page's [data-passkey] element names the ceremony and its two JSON steps: the script
   posts to data-options (with the CSRF token in X-CSRF-Token), hands the options to
   navigator.credentials.create() or .get(), posts the browser's answer to data-verify, and
   follows the "redirect" it gets back. Every message it shows is already in the page, in
   the page's language (#passkey-messages, one data attribute per outcome code). An
   enrolment link carries its one-time token in the address's fragment (#…), which the
   browser never sends: this script posts it, then takes it out of the address bar.
   Nothing is loaded from, or sent to, any other site. */
(function () {
  "use strict";
  var root = document.querySelector("[data-passkey]");
  if (!root) return;
  var kind = root.dataset.passkey;
  var button = root.querySelector("button[data-start]");
  var messages = document.getElementById("passkey-messages").dataset;
  var status = document.getElementById("passkey-status");
  var errorBox = document.getElementById("passkey-error");
  var errorText = document.getElementById("passkey-error-text");
  var token = kind === "enrol" ? location.hash.replace(/^#/, "") : null;
  var busy = false;

  function message(code) {
    var key = String(code || "failed").replace(/_([a-z])/g, function (m, c) {
      return c.toUpperCase();
    });
    return messages[key] || messages.failed;
  }

  function say(text) {
    status.textContent = text || "";
  }

  function fail(code, extra) {
    say("");
    errorText.textContent = message(code);
    if (extra) {
      errorText.appendChild(document.createTextNode(" "));
      errorText.appendChild(extra);
    }
    errorBox.hidden = false;
    errorBox.focus();
  }

  function clearError() {
    errorBox.hidden = true;
    errorText.textContent = "";
  }

  function setBusy(on) {
    busy = on;
    if (on) button.setAttribute("aria-disabled", "true");
    else button.removeAttribute("aria-disabled");
  }

  // base64url (no padding) <-> bytes: the JSON form of WebAuthn's binary fields.
  function toBytes(text) {
    var b64 = text.replace(/-/g, "+").replace(/_/g, "/");
    while (b64.length % 4) b64 += "=";
    var raw = atob(b64);
    var out = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
    return out;
  }

  function toText(buffer) {
    var bytes = new Uint8Array(buffer);
    var raw = "";
    for (var i = 0; i < bytes.length; i++) raw += String.fromCharCode(bytes[i]);
    return btoa(raw).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function descriptors(list) {
    return (list || []).map(function (item) {
      var out = { type: item.type, id: toBytes(item.id) };
      if (item.transports) out.transports = item.transports;
      return out;
    });
  }

  function creationOptions(json) {
    json.challenge = toBytes(json.challenge);
    json.user.id = toBytes(json.user.id);
    json.excludeCredentials = descriptors(json.excludeCredentials);
    return json;
  }

  function requestOptions(json) {
    json.challenge = toBytes(json.challenge);
    json.allowCredentials = descriptors(json.allowCredentials);
    return json;
  }

  function registrationJSON(credential) {
    var response = credential.response;
    return {
      id: credential.id,
      rawId: toText(credential.rawId),
      type: credential.type,
      authenticatorAttachment: credential.authenticatorAttachment || undefined,
      response: {
        clientDataJSON: toText(response.clientDataJSON),
        attestationObject: toText(response.attestationObject),
        transports: response.getTransports ? response.getTransports() : []
      }
    };
  }

  function assertionJSON(credential) {
    var response = credential.response;
    return {
      id: credential.id,
      rawId: toText(credential.rawId),
      type: credential.type,
      authenticatorAttachment: credential.authenticatorAttachment || undefined,
      response: {
        clientDataJSON: toText(response.clientDataJSON),
        authenticatorData: toText(response.authenticatorData),
        signature: toText(response.signature),
        userHandle: response.userHandle ? toText(response.userHandle) : undefined
      }
    };
  }

  function Problem(code) {
    this.code = code;
  }

  async function post(url, body) {
    var answer;
    try {
      answer = await fetch(url, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": root.dataset.csrf },
        body: JSON.stringify(body)
      });
    } catch (e) {
      throw new Problem("network");
    }
    var json = null;
    try {
      json = await answer.json();
    } catch (e) {
      json = null;
    }
    if (!answer.ok) throw new Problem((json && json.code) || "failed");
    return json;
  }

  function browserProblem(error) {
    if (error instanceof Problem) return error.code;
    if (error && error.name === "NotAllowedError") return "cancelled";
    if (error && error.name === "AbortError") return "cancelled";
    if (error && error.name === "InvalidStateError") return "passkey_known";
    if (error && error.name === "SecurityError") return "wrong_origin";
    return "failed";
  }

  async function enrol() {
    var options = await post(root.dataset.options, { token: token });
    say(messages.working);
    var credential = await navigator.credentials.create({ publicKey: creationOptions(options) });
    say(messages.checking);
    var label = document.getElementById("passkey-label").value;
    await post(root.dataset.verify, {
      token: token,
      credential: registrationJSON(credential),
      label: label || null
    });
    // The link is used up: take its token out of the address bar (and its history entry).
    history.replaceState(null, "", location.pathname + location.search);
    root.hidden = true;
    var done = document.getElementById("passkey-done");
    done.hidden = false;
    done.focus();
    say("");
  }

  async function assert() {
    var options = await post(root.dataset.options, {});
    say(messages.working);
    var credential = await navigator.credentials.get({ publicKey: requestOptions(options) });
    say(messages.checking);
    var answer = await post(root.dataset.verify, {
      credential: assertionJSON(credential),
      next: root.dataset.next || null
    });
    location.assign(answer.redirect);
  }

  async function start() {
    if (busy) return;
    clearError();
    setBusy(true);
    try {
      await (kind === "enrol" ? enrol() : assert());
    } catch (error) {
      var code = browserProblem(error);
      fail(code, code === "wrong_origin" ? consoleLink() : null);
    } finally {
      setBusy(false);
    }
  }

  function consoleLink() {
    var link = document.createElement("a");
    link.href = root.dataset.origin + location.pathname + location.search + location.hash;
    link.textContent = root.dataset.origin;
    return link;
  }

  if (!window.PublicKeyCredential || !navigator.credentials) {
    fail("unsupported");
    button.hidden = true;
    return;
  }
  if (location.origin !== root.dataset.origin) {
    // Passkeys are bound to the console's own address: open the page there.
    fail("wrong_origin", consoleLink());
    button.hidden = true;
    return;
  }
  if (kind === "enrol") {
    if (!/^[A-Za-z0-9_-]{43}$/.test(token || "")) {
      fail("link_unknown");
      button.hidden = true;
      return;
    }
    // Switching language keeps the link's token (the fragment is not part of the link).
    var switcher = document.querySelector(".lang-switch");
    if (switcher) switcher.href = switcher.getAttribute("href") + location.hash;
  }
  button.addEventListener("click", start);
})();
