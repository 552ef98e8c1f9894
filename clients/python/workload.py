#!/usr/bin/env python3
"""A small application on redis-py with its defaults, as a user would write it.

Points at a Redis server (or a steadfast proxy), runs one workload for a number of seconds and
prints what happened as one JSON object on standard output. The proxy's tests and the drill
run it through real faults; it knows nothing of steadfast beyond the name of the proxy's gap
channel, which any application may subscribe to.

Workloads:
  counter      INCR, GET and LPUSH in turn (non-idempotent writes): every failure is listed
  pubsub       a subscriber and a publisher of numbered messages; gaps told by the proxy
  transaction  WATCH / MULTI / EXEC increments, retried on an aborted EXEC as usual
  drill        SET then GET, 5-15 ms apart, until standard input closes (or --seconds):
               every operation's start, end (Unix ms) and error text, for steadfast's drill

--mode cluster connects as a cluster-mode application does (redis-py's RedisCluster: CLUSTER
SLOTS, then every command to its slot's node), for the counter and drill workloads.
"""

import argparse
import json
import random
import sys
import threading
import time

import redis

GAP_CHANNEL = "__steadfast__:gaps"


def now_ms():
    return int(time.time() * 1000)


class Report:
    def __init__(self, workload):
        self.data = {
            "client": "redis-py " + redis.__version__,
            "workload": workload,
            "ops": 0,
            "ok": 0,
            "failures": [],
            "longest_gap_ms": 0,
        }
        self.last_ok = None
        self.lock = threading.Lock()

    def ok(self):
        with self.lock:
            self.data["ops"] += 1
            self.data["ok"] += 1
            at = now_ms()
            if self.last_ok is not None:
                self.data["longest_gap_ms"] = max(self.data["longest_gap_ms"], at - self.last_ok)
            self.last_ok = at

    def failed(self, op, error):
        with self.lock:
            self.data["ops"] += 1
            if len(self.data["failures"]) < 1000:
                self.data["failures"].append({"at_ms": now_ms(), "op": op, "error": str(error)})

    def count(self, name, by=1):
        with self.lock:
            self.data[name] = self.data.get(name, 0) + by


def counter(r, args, report):
    ops = [
        ("INCR", lambda: r.incr(args.key)),
        ("GET", lambda: r.get(args.key)),
        ("LPUSH", lambda: r.lpush(args.key + ":list", "x")),
    ]
    n = 0
    until = time.monotonic() + args.seconds
    while time.monotonic() < until:
        name, op = ops[n % len(ops)]
        n += 1
        try:
            op()
            report.ok()
            report.count(name.lower() + "_ok")
        except redis.RedisError as error:
            report.failed(name, error)
            report.count(name.lower() + "_failed")
        time.sleep(args.pause)


def pubsub(r, args, report):
    channel = args.key + ":channel"
    subscriber = r.pubsub()
    subscriber.subscribe(channel, GAP_CHANNEL)
    received, gaps = [], []
    # When each message the server passed on to a subscriber was published: (sent, answered).
    heard_at = {}
    done = threading.Event()

    def publish():
        publisher = redis.Redis(host=args.host, port=args.port)
        seq = 0
        until = time.monotonic() + args.seconds
        while time.monotonic() < until:
            seq += 1
            try:
                sent = time.time() * 1000
                receivers = publisher.publish(channel, str(seq))
                report.ok()
                report.count("published")
                if receivers == 0:
                    report.count("published_unheard")
                else:
                    heard_at[seq] = (sent, time.time() * 1000)
            except redis.RedisError as error:
                report.failed("PUBLISH", error)
            time.sleep(args.pause)
        done.set()

    thread = threading.Thread(target=publish)
    thread.start()
    # Reads until the publisher is done and a quiet half second has passed, then on while what
    # the server delivered has not all arrived (a busy machine may be slow to pass the last few
    # on), within a bound: a message still missing then is reported missing.
    def heard():
        return report.data.get("published", 0) - report.data.get("published_unheard", 0)

    quiet_since = None
    while True:
        try:
            message = subscriber.get_message(ignore_subscribe_messages=True, timeout=0.1)
        except redis.RedisError as error:
            report.failed("READ", error)
            time.sleep(0.05)
            continue
        if message is None:
            if done.is_set():
                quiet_since = quiet_since or time.monotonic()
                quiet = time.monotonic() - quiet_since
                if quiet > 5 or (quiet > 0.5 and len(received) >= heard()):
                    break
            continue
        quiet_since = None
        data = message["data"].decode() if isinstance(message["data"], bytes) else message["data"]
        name = message["channel"].decode() if isinstance(message["channel"], bytes) else message["channel"]
        if name == GAP_CHANNEL:
            gaps.append(json.loads(data))
        else:
            received.append(int(data))
    thread.join()
    report.data["received"] = len(received)
    report.data["duplicates"] = len(received) - len(set(received))
    report.data["out_of_order"] = sum(1 for a, b in zip(received, received[1:]) if b < a)
    report.data["gaps"] = gaps
    # A message the server passed on may be missing only if it was published inside a told gap.
    got = set(received)

    def in_gap(at):
        return any(at[0] <= g["until_ms"] and at[1] >= g["from_ms"] for g in gaps)

    report.data["missing_outside_gaps"] = sum(
        1 for seq, at in heard_at.items() if seq not in got and not in_gap(at)
    )


def transaction(r, args, report):
    until = time.monotonic() + args.seconds
    while time.monotonic() < until:
        try:
            with r.pipeline() as pipe:
                pipe.watch(args.key)
                value = int(pipe.get(args.key) or 0)
                pipe.multi()
                pipe.set(args.key, value + 1)
                pipe.execute()
            report.ok()
            report.count("committed")
        except redis.WatchError:
            report.count("aborted")
        except redis.RedisError as error:
            report.failed("EXEC", error)
        time.sleep(args.pause)


def drill(r, args, report):
    stop = threading.Event()

    def watch_stdin():
        sys.stdin.read()
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    ops = []
    until = time.monotonic() + args.seconds
    n = 0
    while not stop.is_set() and time.monotonic() < until:
        n += 1
        started = time.time() * 1000
        error = None
        try:
            r.set(args.key, n)
            r.get(args.key)
        except redis.RedisError as e:
            error = "%s: %s" % (type(e).__name__, e)
        ops.append([started, time.time() * 1000, error])
        time.sleep(0.005 + 0.01 * random.random())
    report.data["records"] = ops


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6379)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--pause", type=float, default=0.002, help="seconds between operations")
    parser.add_argument("--key", default="workload")
    parser.add_argument("--mode", choices=["standalone", "cluster"], default="standalone")
    parser.add_argument("workload", choices=["counter", "pubsub", "transaction", "drill"])
    args = parser.parse_args()
    report = Report(args.workload)
    # redis-py's defaults, as an application would connect (RESP2 unless asked, CLIENT SETINFO).
    if args.mode == "cluster":
        if args.workload not in ("counter", "drill"):
            parser.error("--mode cluster runs the counter and drill workloads")
        r = redis.cluster.RedisCluster(host=args.host, port=args.port)
    else:
        r = redis.Redis(host=args.host, port=args.port)
    # The drill records every operation from the first, failures included: no start-up check
    # that would end the program while the server is down.
    if args.workload != "drill":
        r.ping()
    workloads = {"counter": counter, "pubsub": pubsub, "transaction": transaction, "drill": drill}
    workloads[args.workload](r, args, report)
    print(json.dumps(report.data))


if __name__ == "__main__":
    main()
