// The clinic's web front end: a page that calls the API through the same host.
const http = require("http");

const port = Number(process.env.PORT || 3000);
const revision = process.env.SLIPWAY_REVISION || "dev";

const page = `<!doctype html>
<html><head><meta charset="utf-8"><title>Clinic</title></head>
<body>
<h1>Clinic</h1>
<p>Front end revision ${revision}.</p>
<ul id="patients"></ul>
<script>
fetch("/api/patients").then(r => r.json()).then(list => {
  const ul = document.getElementById("patients");
  for (const p of list) { const li = document.createElement("li"); li.textContent = p.name; ul.appendChild(li); }
});
</script>
</body></html>
`;

const server = http.createServer((req, res) => {
  if (req.url === "/health" || req.url === "/ready") {
    res.writeHead(200, { "content-type": "text/plain" });
    res.end("ok\n");
    return;
  }
  res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
  res.end(page);
});
server.keepAliveTimeout = 65000;
server.listen(port, "127.0.0.1", () => console.log(`web listening on 127.0.0.1:${port}`));
process.on("SIGTERM", () => server.close(() => process.exit(0)));
