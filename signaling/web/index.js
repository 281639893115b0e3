// The start page: create an interview and hand out the two links.
"use strict";

const form = document.getElementById("create");
const errorBox = document.getElementById("error");

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
  const res = await fetch("/api/interviews", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const reply = await res.json().catch(() => ({}));
  if (!res.ok) {
    showError(reply.error || `The server answered ${res.status}.`);
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
