const params = new URLSearchParams(location.search);
const backend = params.get("backend");
const body = document.body;
try {
  const response = await fetch(`${backend}/api/jobs/${params.get("job")}`);
  body.dataset.poll = `read ${response.status}`;
} catch (err) {
  body.dataset.poll = `blocked ${err.name}`;
}
const ws = new WebSocket(`${backend.replace(/^http/, "ws")}/ws/orchestrate/${params.get("submit")}`);
ws.onopen = () => {
  body.dataset.ws = "open";
  ws.send(JSON.stringify({ type: "create_job", brief: "from a foreign site", teams: [], request_id: "x" }));
};
ws.onclose = (event) => { body.dataset.wsClosed = String(event.code); };
