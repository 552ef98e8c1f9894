#!/usr/bin/env node
// A small application on ioredis with its defaults, as a user would write it.
//
// Points at a Redis server (or a steadfast proxy), runs one workload for a number of seconds
// and prints what happened as one JSON object on standard output. The proxy's tests and the
// drill run it through real faults; it knows nothing of steadfast beyond the name of the
// proxy's gap channel, which any application may subscribe to.
//
// Workloads:
//   counter      INCR, GET and LPUSH in turn (non-idempotent writes): every failure is listed
//   pubsub       a subscriber and a publisher of numbered messages; gaps told by the proxy
//   transaction  WATCH / MULTI / EXEC increments, retried on an aborted EXEC as usual
//   drill        SET then GET, 5-15 ms apart, until standard input closes (or --seconds):
//                every operation's start, end (Unix ms) and error text, for steadfast's drill
//
// --mode cluster connects as a cluster-mode application does (ioredis' Cluster: CLUSTER SLOTS,
// then every command to its slot's node), for the counter and drill workloads.
"use strict";

const Redis = require("ioredis");

const GAP_CHANNEL = "__steadfast__:gaps";

function parse(argv) {
  const args = { host: "127.0.0.1", port: 6379, seconds: 5, pause: 0.002, key: "workload", mode: "standalone" };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    if (flag.startsWith("--")) {
      const name = flag.slice(2);
      if (!(name in args)) throw new Error(`unknown option ${flag}`);
      args[name] = typeof args[name] === "number" ? Number(argv[++i]) : argv[++i];
    } else {
      args.workload = flag;
    }
  }
  if (!["counter", "pubsub", "transaction", "drill"].includes(args.workload)) {
    throw new Error("workload: counter, pubsub, transaction or drill");
  }
  if (!["standalone", "cluster"].includes(args.mode)) throw new Error("mode: standalone or cluster");
  if (args.mode === "cluster" && !["counter", "drill"].includes(args.workload)) {
    throw new Error("--mode cluster runs the counter and drill workloads");
  }
  return args;
}

class Report {
  constructor(workload) {
    const version = require("ioredis/package.json").version;
    this.data = { client: `ioredis ${version}`, workload, ops: 0, ok: 0, failures: [], longest_gap_ms: 0 };
    this.lastOk = null;
  }
  ok() {
    this.data.ops++;
    this.data.ok++;
    const at = Date.now();
    if (this.lastOk !== null) this.data.longest_gap_ms = Math.max(this.data.longest_gap_ms, at - this.lastOk);
    this.lastOk = at;
  }
  failed(op, error) {
    this.data.ops++;
    if (this.data.failures.length < 1000) {
      this.data.failures.push({ at_ms: Date.now(), op, error: String(error && error.message ? error.message : error) });
    }
  }
  count(name, by = 1) {
    this.data[name] = (this.data[name] || 0) + by;
  }
}

const sleep = (seconds) => new Promise((resolve) => setTimeout(resolve, seconds * 1000));

async function counter(redis, args, report) {
  const ops = [
    ["INCR", () => redis.incr(args.key)],
    ["GET", () => redis.get(args.key)],
    ["LPUSH", () => redis.lpush(`${args.key}:list`, "x")],
  ];
  const until = Date.now() + args.seconds * 1000;
  for (let n = 0; Date.now() < until; n++) {
    const [name, op] = ops[n % ops.length];
    try {
      await op();
      report.ok();
      report.count(`${name.toLowerCase()}_ok`);
    } catch (error) {
      report.failed(name, error);
      report.count(`${name.toLowerCase()}_failed`);
    }
    await sleep(args.pause);
  }
}

async function pubsub(redis, args, report) {
  const channel = `${args.key}:channel`;
  const subscriber = new Redis({ host: args.host, port: args.port });
  const received = [];
  const gaps = [];
  subscriber.on("message", (name, data) => {
    if (name === GAP_CHANNEL) gaps.push(JSON.parse(data));
    else received.push(Number(data));
  });
  subscriber.on("error", () => {});
  await subscriber.subscribe(channel, GAP_CHANNEL);
  const until = Date.now() + args.seconds * 1000;
  // When each message the server passed on to a subscriber was published: [sent, answered].
  const heardAt = new Map();
  for (let seq = 1; Date.now() < until; seq++) {
    try {
      const sent = Date.now();
      const receivers = await redis.publish(channel, String(seq));
      report.ok();
      report.count("published");
      if (receivers === 0) report.count("published_unheard");
      else heardAt.set(seq, [sent, Date.now()]);
    } catch (error) {
      report.failed("PUBLISH", error);
    }
    await sleep(args.pause);
  }
  // Waits for what the server delivered (a busy machine may be slow to pass the last few on),
  // within a bound: a message still missing then is reported missing.
  const heard = () => (report.data.published || 0) - (report.data.published_unheard || 0);
  const settle = Date.now() + 5000;
  await sleep(0.5);
  while (received.length < heard() && Date.now() < settle) await sleep(0.05);
  report.data.received = received.length;
  report.data.duplicates = received.length - new Set(received).size;
  report.data.out_of_order = received.filter((value, i) => i > 0 && value < received[i - 1]).length;
  report.data.gaps = gaps;
  // A message the server passed on may be missing only if it was published inside a told gap.
  const got = new Set(received);
  const inGap = ([sent, answered]) => gaps.some((g) => sent <= g.until_ms && answered >= g.from_ms);
  report.data.missing_outside_gaps = [...heardAt].filter(([seq, at]) => !got.has(seq) && !inGap(at)).length;
  subscriber.disconnect();
}

async function transaction(redis, args, report) {
  // WATCH needs a connection of its own: a dedicated client, as ioredis' docs advise.
  const own = redis.duplicate();
  own.on("error", () => {});
  const until = Date.now() + args.seconds * 1000;
  while (Date.now() < until) {
    try {
      await own.watch(args.key);
      const value = Number((await own.get(args.key)) || 0);
      const result = await own.multi().set(args.key, value + 1).exec();
      if (result === null) {
        report.count("aborted");
      } else {
        const failed = result.find(([error]) => error);
        if (failed) throw failed[0];
        report.ok();
        report.count("committed");
      }
    } catch (error) {
      report.failed("EXEC", error);
    }
    await sleep(args.pause);
  }
  own.disconnect();
}

async function drill(redis, args, report) {
  let stopped = false;
  process.stdin.on("data", () => {});
  process.stdin.on("end", () => {
    stopped = true;
  });
  process.stdin.resume();
  const ops = [];
  const until = Date.now() + args.seconds * 1000;
  for (let n = 1; !stopped && Date.now() < until; n++) {
    const started = Date.now();
    let error = null;
    try {
      await redis.set(args.key, String(n));
      await redis.get(args.key);
    } catch (e) {
      error = `${e && e.name ? e.name : "Error"}: ${e && e.message ? e.message : e}`;
    }
    ops.push([started, Date.now(), error]);
    await sleep(0.005 + 0.01 * Math.random());
  }
  report.data.records = ops;
  process.stdin.pause();
}

async function main() {
  const args = parse(process.argv.slice(2));
  const report = new Report(args.workload);
  // ioredis' defaults, as an application would connect (HELLO 3, CLIENT SETINFO, INFO ready check).
  const redis =
    args.mode === "cluster"
      ? new Redis.Cluster([{ host: args.host, port: args.port }])
      : new Redis({ host: args.host, port: args.port });
  redis.on("error", () => {});
  // The drill records every operation from the first, failures included: no start-up check
  // that would end the program while the server is down.
  if (args.workload !== "drill") await redis.ping();
  await { counter, pubsub, transaction, drill }[args.workload](redis, args, report);
  process.stdout.write(JSON.stringify(report.data) + "\n");
  redis.disconnect();
}

main().catch((error) => {
  process.stderr.write(`workload failed: ${error.stack || error}\n`);
  process.exit(1);
});
