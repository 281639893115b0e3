// The start page: create an interview and hand out the two links.
// Creating needs an operator key: from the link `proctor serve` prints (`/#key=...`, or `?key=`), kept in
// localStorage, sent as `Authorization: Bearer`; the key is taken out of the address bar at once.
"use strict";

const form = document.getElementById("create");
const errorBox = document.getElementById("error");
const keyInput = form.elements.operator_key;
const KEY_ITEM = "proctor.operatorKey";

function storage() {
  try {
    return window.localStorage;
  } catch (e) {
    return window.sessionStorage;  // storage disabled for the site: the tab keeps it
  }
}

(function takeKeyFromUrl() {
  const fromUrl = new URLSearchParams(location.hash.slice(1)).get("key")
    || new URLSearchParams(location.search).get("key");
  if (fromUrl) {
    try { storage().setItem(KEY_ITEM, fromUrl); } catch (e) { /* kept in the field only */ }
    history.replaceState(null, "", location.pathname);
  }
  let kept = "";
  try { kept = storage().getItem(KEY_ITEM) || ""; } catch (e) { /* none */ }
  keyInput.value = fromUrl || kept;
})();

function showError(message) {
  errorBox.textContent = message;
  errorBox.hidden = !message;
}

form.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  showError("");
  const data = new FormData(form);
  const body = {
    candidate_name: data.get("candidate_name").trim(),
    interviewer_email: data.get("interviewer_email").trim(),
  };
  const policy = (data.get("policy") || "").trim();
  if (policy) {
    try {
      body.policy = JSON.parse(policy);
    } catch (e) {
      showError("The policy is not valid JSON: " + e.message);
      return;
    }
  }
  const key = keyInput.value.trim();
  try { storage().setItem(KEY_ITEM, key); } catch (e) { /* kept in the field only */ }
  let res;
  try {
    res = await fetch("/api/interviews", {
      method: "POST",
      headers: { "Content-Type": "application/json", "Authorization": "Bearer " + key },
      body: JSON.stringify(body),
    });
  } catch (e) {
    showError("Could not reach the server: " + e.message);
    return;
  }
  const reply = await res.json().catch(() => ({}));
  if (!res.ok) {
    let message = reply.error || `The server answered ${res.status}.`;
    if (res.status === 401) {
      message = "Operator key: " + message;
      keyInput.focus();
    } else if (res.status === 429) {
      message = reply.error || `Too many interviews created; retry in ${res.headers.get("Retry-After")} s.`;
    }
    showError(message);
    return;
  }
  document.getElementById("interviewer-url").value = reply.interviewer_url;
  document.getElementById("open-interviewer").href = reply.interviewer_url;
  document.getElementById("candidate-url").value = reply.candidate_url;
  document.getElementById("links").hidden = false;
  document.body.dataset.state = "created";
});

document.getElementById("copy-candidate").addEventListener("click", async () => {
  const input = document.getElementById("candidate-url");
  input.select();
  try {
    await navigator.clipboard.writeText(input.value);
  } catch (e) {
    document.execCommand("copy");
  }
});
