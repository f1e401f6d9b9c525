// A small service in another language for the sidecar tests: node upstream.js PORT
//   GET  /items/:id?ms=N     answers after N ms (default 30)
//   GET  /exports/:id?ms=N   answers after N ms (default 150)
//   GET  /bytes/:mib         streams :mib MiB in 64 KiB chunks, honouring backpressure
//   POST /upload             reads the body as it comes, answers its size and sha256
//   GET  /hang               never answers
//   GET  /headers            answers the request headers as JSON
"use strict";
const http = require("http");
const crypto = require("crypto");

const port = Number(process.argv[2] || 0);
const CHUNK = Buffer.alloc(64 * 1024, 120);

function json(res, body) {
  const data = JSON.stringify(body);
  res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(data) });
  res.end(data);
}

function stream(res, bytes) {
  res.writeHead(200, { "content-type": "application/octet-stream", "content-length": bytes });
  let left = bytes;
  const more = () => {
    while (left > 0) {
      const n = Math.min(left, CHUNK.length);
      left -= n;
      if (!res.write(n === CHUNK.length ? CHUNK : CHUNK.subarray(0, n))) {
        res.once("drain", more);
        return;
      }
    }
    res.end();
  };
  more();
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, "http://upstream");
  const parts = url.pathname.split("/").filter(Boolean);
  const ms = Number(url.searchParams.get("ms"));
  if (req.method === "GET" && parts[0] === "items") {
    setTimeout(() => json(res, { item: parts[1] }), Number.isFinite(ms) && ms >= 0 ? ms : 30);
  } else if (req.method === "GET" && parts[0] === "exports") {
    setTimeout(() => json(res, { report: parts[1] }), Number.isFinite(ms) && ms >= 0 ? ms : 150);
  } else if (req.method === "GET" && parts[0] === "bytes") {
    stream(res, Math.round(Number(parts[1]) * 1024 * 1024));
  } else if (req.method === "POST" && parts[0] === "upload") {
    const hash = crypto.createHash("sha256");
    let size = 0;
    req.on("data", (chunk) => { size += chunk.length; hash.update(chunk); });
    req.on("end", () => json(res, { bytes: size, sha256: hash.digest("hex") }));
  } else if (parts[0] === "hang") {
    // never answers
  } else if (parts[0] === "headers") {
    json(res, req.headers);
  } else {
    res.writeHead(404);
    res.end("not found");
  }
});
server.keepAliveTimeout = 60000;
server.listen(port, "127.0.0.1", () => {
  console.log(`listening ${server.address().port}`);
});
