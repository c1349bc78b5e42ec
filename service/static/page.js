// heed's translation page. Plain JS, no dependencies: it only calls the public HTTP API.
//   GET  /v1/models     -> the default translation model and its target languages
//   POST /v1/translate  -> {"return_alignment": true}: the translation and its attention weights
// The form's data-state ("loading", "locked", "ready", "busy", "done", "error") tells scripts and
// tests when an answer is on the page. "locked": the server wants an API key (HEED_API_KEYS); the
// key typed in is kept for this tab only (sessionStorage) and sent as "Authorization: Bearer".
"use strict";

const $ = (id) => document.getElementById(id);
let model = null;

const KEY = "heed-api-key";

class Unauthorized extends Error {}

/** Fetch a JSON route; heed's errors ({"error": {"type", "message"}}) become thrown Errors. */
async function api(path, body) {
  const headers = {};
  const key = sessionStorage.getItem(KEY);
  if (key) {
    headers.Authorization = `Bearer ${key}`;
  }
  const init = body === undefined ? {headers} : {
    method: "POST",
    headers: {...headers, "Content-Type": "application/json"},
    body: JSON.stringify(body),
  };
  const response = await fetch(path, init);
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const error = data && data.error;
    const message = error ? `${error.message} (${response.status} ${error.type})` : `HTTP ${response.status}`;
    throw response.status === 401 ? new Unauthorized(message) : new Error(message);
  }
  return data;
}

function setState(state, message = "") {
  $("form").dataset.state = state;
  $("status").textContent = message;
  $("status").classList.toggle("error", state === "error");
  const idle = state !== "loading" && state !== "busy" && model !== null;
  $("text").disabled = !idle;
  $("translate").disabled = !idle;
  $("lang").disabled = !idle || $("lang").options.length === 0;
}

function languageName(code) {
  try {
    const name = new Intl.DisplayNames(["en"], {type: "language"}).of(code);
    return name && name !== code ? `${name} (${code})` : code;
  } catch {
    return code;  // not a BCP 47 code: show it as it is
  }
}

async function loadModel() {
  const {models, defaults} = await api("/v1/models");
  const name = defaults && defaults.translate;
  model = models.find((m) => m.name === name) || null;
  if (model === null) {
    throw new Error("this server has no translation model");
  }
  const select = $("lang");
  for (const code of model.languages.target) {
    select.append(new Option(languageName(code), code));
  }
  if (model.languages.default_target) {
    select.value = model.languages.default_target;
  }
}

const WHITE = [255, 255, 255];
const DARK_BLUE = [8, 48, 107];  // the legend's ramp (page.css .ramp) runs between the same two

/** Background of a cell: white at weight 0 to dark blue at the map's largest weight (so that a
 * diffuse attention still shows its shape; the legend gives that largest weight). */
function colour(weight, largest) {
  const w = largest > 0 ? Math.min(1, Math.max(0, weight / largest)) : 0;
  return `rgb(${WHITE.map((low, k) => Math.round(low + (DARK_BLUE[k] - low) * w)).join(", ")})`;
}

function header(text, scope) {
  const th = document.createElement("th");
  th.scope = scope;
  th.textContent = text;
  return th;
}

/** The heatmap: one row per output token, one column per input token. */
function drawHeatmap(alignment) {
  const table = $("heatmap");
  table.replaceChildren();
  const largest = Math.max(0, ...alignment.weights.flat());
  $("legend-max").textContent = largest.toFixed(2);
  const caption = document.createElement("caption");
  caption.textContent = `${alignment.target_tokens.length} output tokens × ${alignment.source_tokens.length} input tokens`;
  const head = table.createTHead().insertRow();
  head.append(header("", "col"));
  for (const token of alignment.source_tokens) {
    head.append(header(token, "col"));
  }
  const body = table.createTBody();
  alignment.weights.forEach((weights, i) => {
    const row = body.insertRow();
    const target = alignment.target_tokens[i];
    row.append(header(target, "row"));
    weights.forEach((weight, j) => {
      const cell = row.insertCell();
      cell.style.background = colour(weight, largest);
      cell.dataset.weight = String(weight);
      cell.title = `${target} → ${alignment.source_tokens[j]}: ${weight.toFixed(3)}`;
    });
  });
  table.prepend(caption);
}

async function translate(event) {
  event.preventDefault();
  const text = $("text").value.trim();
  if (!text) {
    setState("error", "Type something to translate.");
    return;
  }
  setState("busy", "Translating…");
  try {
    const request = {model: model.name, text, return_alignment: true};
    if ($("lang").value) {
      request.target_lang = $("lang").value;
    }
    const data = await api("/v1/translate", request);
    const translation = data.translations[0];
    $("translation").textContent = translation.text;
    $("translation").lang = request.target_lang || "";
    $("model").textContent = `${data.model}, ${translation.output_tokens} tokens, ended by ${translation.finish_reason}`;
    drawHeatmap(translation.alignment);
    $("result").hidden = false;
    setState("done");
  } catch (error) {
    setState("error", error.message);
  }
}

/** Load the models and enable the form; ask for an API key when the server wants one. */
async function start() {
  setState("loading", "Loading the models…");
  try {
    await loadModel();
    $("key-form").hidden = true;
    setState("ready");
    $("text").focus();
  } catch (error) {
    if (error instanceof Unauthorized) {
      const tried = sessionStorage.getItem(KEY) !== null;
      sessionStorage.removeItem(KEY);
      $("key-form").hidden = false;
      setState("locked", tried ? `That key was refused: ${error.message}` : "This server needs an API key.");
      $("key").focus();
    } else {
      setState("error", `Cannot load the models: ${error.message}`);
    }
  }
}

function useKey(event) {
  event.preventDefault();
  const key = $("key").value.trim();
  if (key) {
    sessionStorage.setItem(KEY, key);
    $("key").value = "";
    start();
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("form").addEventListener("submit", translate);
  $("key-form").addEventListener("submit", useKey);
  start();
});
