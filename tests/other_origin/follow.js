const params = new URLSearchParams(location.search);
const backend = params.get("backend");
const body = document.body;
try {
  const { followJob } = await import(`${backend}/static/chimera.js`);
  const states = [];
  followJob(params.get("job"), {
    baseUrl: backend,
    onConnection: (state) => { states.push(state); body.dataset.connection = state; body.dataset.states = states.join(" "); },
    onUpdate: (job) => {
      body.dataset.jobStatus = job.state;
      const ids = Object.fromEntries(Object.values(job.teams).map((t) => [t.team, t.thoughts.map((x) => x.id)]));
      document.getElementById("out").textContent = JSON.stringify(ids);
    },
  });
  body.dataset.module = "loaded";
} catch (err) {
  body.dataset.module = `blocked ${err.name}`;
}
