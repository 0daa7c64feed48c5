#!/usr/bin/env python3
"""Runs the movies example on a real Kafka broker under Prometheus and plots the README picture.

What it does, in order:

1. creates a fresh `movies-plot-<time>` topic (3 partitions) and its dead-letter topic;
2. starts Prometheus (scraping every second, temporary storage) and the movies example with
   `failure-strategy=dead-letter-queue` on those topics, and a session timeout of 45 s
   (librdkafka's default; see SESSION_TIMEOUT_MS for why not the example's 6 s);
3. produces titles with Kafka's console producer at 20, then 150, then 20 titles a second
   (60 s, 90 s, 60 s); every 20th title has a ' or a , in it (alternately), which the example
   rejects, so it goes to the dead-letter topic;
4. 15 s into the 150/s phase it stops the example (SIGSTOP) for 30 s: the whole process, so
   nothing consumes and no scrape is answered, then lets it go on (SIGCONT);
5. asks Prometheus's /api/v1/query_range for the dead-letter rate by error type and the
   consumer lag per partition, and writes them as a hand-made SVG (stdlib only).

The run takes about 4 minutes 20 seconds. Run it from the repository root:

    python3 monitoring/plot/movies_run.py \\
        --bootstrap 127.0.0.1:19392 \\
        --movies target/debug/examples/movies \\
        --out monitoring/movies-dlq-and-lag.svg

Prerequisites:
- a Kafka broker at --bootstrap (topics are not auto-created: the script creates its own), e.g.
  `../shared/tools/kafka-broker start 19392` (this repository's end-to-end broker);
- the movies example built (`cargo build --example movies`), given as --movies;
- `prometheus` on PATH;
- Java and Kafka's tools, given as --kafka-home: either an Apache Kafka distribution (its
  bin/kafka-topics.sh and bin/kafka-console-producer.sh are used) or a directory with the jars in
  libs/ (what kafka-broker installs, the default: ~/.cache/messaging-tools/apache-kafka-4.1.1).

Every process it starts is stopped when it ends, on error and on Ctrl-C too. The work directory
(logs, Prometheus data, and data.json with the query results) is kept and printed; to draw the
SVG again from it without a new run:

    python3 monitoring/plot/movies_run.py --replot /tmp/movies-plot-XXXX/data.json \\
        --out monitoring/movies-dlq-and-lag.svg
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from xml.sax.saxutils import escape

# The scenario: (titles a second, seconds), one after the other.
PHASES = [(20, 60), (150, 90), (20, 60)]
# The example is stopped this many seconds after the producer started, for STOP_SECONDS.
STOP_AT = 75
STOP_SECONDS = 30
# Quiet time plotted before the producer starts and after it ends.
LEAD_SECONDS = 15
TAIL_SECONDS = 20
PARTITIONS = 3
# The example's own session timeout is 6 s. A consumer frozen past it loses its partitions when it
# wakes (revoked and assigned again within milliseconds), and whether the lag watch's first round
# after the stop falls before that revoke or inside it is a race: inside it, the round drops the
# series and the next one, 5 s later, finds the backlog long consumed (it takes well under a
# second). librdkafka's default, 45 s, outlasts the stop: the consumer keeps its partitions and the
# first round after the stop measures the backlog.
SESSION_TIMEOUT_MS = 45000

# Every 20th title is rejected, alternately for its ' and its ,.
GOOD_TITLES = [
    "The Shawshank Redemption",
    "The Godfather",
    "Pulp Fiction",
    "12 Angry Men",
    "Spirited Away",
    "Seven Samurai",
    "Casablanca",
    "Rear Window",
]
BAD_TITLES = ["Schindler's List", "The Good, the Bad and the Ugly"]

# Dead letters by error type, only while the example answered its scrape: without the `and`,
# rate() would go on for its window into the stop from the samples before it.
DEAD_LETTER_QUERY = (
    'sum by (error_type) (rate(messaging_records_dead_lettered_by_error_type_total{channel="movies"}[10s]))'
    ' and on () (up{job="movies"} == 1)'
)
# The lag is a gauge: a missed scrape leaves a gap by itself (Prometheus marks it stale).
LAG_QUERY = 'messaging_consumer_lag{channel="movies"}'


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def title(number):
    if number % 20 == 19:
        return BAD_TITLES[(number // 20) % 2]
    return GOOD_TITLES[number % len(GOOD_TITLES)]


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http_get(url, timeout=5):
    """The body of a 200 answer, or None (refused, timed out, another status)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.read().decode() if answer.status == 200 else None
    except (urllib.error.URLError, OSError):
        return None


def wait_for(what, condition, seconds, processes=()):
    deadline = time.monotonic() + seconds
    while not condition():
        for process in processes:
            process.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up waiting: {what}")
        time.sleep(0.5)


class Processes:
    """Starts processes with their output in a log file; stop_all() ends every one of them."""

    def __init__(self, work):
        self.work = work
        self.running = []

    def start(self, name, command, env=None, stdin=subprocess.DEVNULL):
        log_file = open(os.path.join(self.work, f"{name}.log"), "w")
        process = subprocess.Popen(
            command, env=env, stdin=stdin, stdout=log_file, stderr=subprocess.STDOUT, text=True
        )
        process.name = name

        def check_alive():
            if process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {process.returncode}; see {log_file.name}"
                )

        process.check_alive = check_alive
        self.running.append(process)
        return process

    def stop_all(self):
        for process in reversed(self.running):
            if process.poll() is not None:
                continue
            # A stopped process does not act on SIGTERM until it is continued.
            process.send_signal(signal.SIGCONT)
            process.terminate()
        for process in self.running:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class KafkaTools:
    """Kafka's command-line tools, from a distribution's bin/ or as classes from libs/*.jar."""

    def __init__(self, home):
        self.home = home
        self.bin = os.path.join(home, "bin")
        if not os.path.exists(os.path.join(self.bin, "kafka-topics.sh")) and not os.path.isdir(
            os.path.join(home, "libs")
        ):
            raise SystemExit(f"--kafka-home {home}: neither bin/kafka-topics.sh nor libs/ there")

    def command(self, script, main_class, *args):
        if os.path.exists(os.path.join(self.bin, script)):
            return [os.path.join(self.bin, script), *args]
        java = ["java", "-cp", os.path.join(self.home, "libs", "*")]
        logging = os.path.join(self.home, "log4j2.properties")
        if os.path.exists(logging):
            java.insert(1, f"-Dlog4j2.configurationFile={logging}")
        return [*java, main_class, *args]

    def create_topic(self, bootstrap, topic, partitions):
        created = subprocess.run(
            self.command(
                "kafka-topics.sh",
                "org.apache.kafka.tools.TopicCommand",
                "--bootstrap-server", bootstrap,
                "--create", "--topic", topic,
                "--partitions", str(partitions), "--replication-factor", "1",
            ),
            capture_output=True,
            text=True,
        )
        if created.returncode != 0:
            raise RuntimeError(f"creating {topic} failed:\n{created.stdout}{created.stderr}")

    def console_producer(self, bootstrap, topic):
        return self.command(
            "kafka-console-producer.sh",
            "org.apache.kafka.tools.ConsoleProducer",
            "--bootstrap-server", bootstrap,
            "--topic", topic,
            # Its default linger is 1 s, which would deliver the titles in lumps.
            "--producer-property", "linger.ms=5",
        )


def produce(producer, phases, on_tick, check_alive):
    """Writes titles to the console producer's stdin, each phase at its rate, on a fixed clock
    (a late write is caught up at once, so the count per phase is exact). Returns the start of
    every phase (epoch seconds) and the number of titles written."""
    starts = []
    number = 0
    begin = time.monotonic()
    phase_begin = begin
    for rate, seconds in phases:
        starts.append(time.time())
        sent_in_phase = 0
        while sent_in_phase < rate * seconds:
            elapsed = time.monotonic() - phase_begin
            due = min(int(elapsed * rate), rate * seconds)
            lines = []
            while sent_in_phase < due:
                lines.append(title(number) + "\n")
                number += 1
                sent_in_phase += 1
            if lines:
                producer.stdin.write("".join(lines))
                producer.stdin.flush()
            on_tick(time.monotonic() - begin)
            check_alive()
            time.sleep(0.02)
        phase_begin += seconds
    return starts, number


def run(args):
    work = tempfile.mkdtemp(prefix="movies-plot-")
    log(f"work directory {work}")
    tools = KafkaTools(args.kafka_home)
    processes = Processes(work)
    # SIGTERM ends the run like Ctrl-C: through the finally below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        return scenario(args, work, tools, processes)
    finally:
        processes.stop_all()
        log(f"stopped everything; logs and data in {work}")


def scenario(args, work, tools, processes):
    # Fresh topics and group each run: no offsets or records left from an earlier one.
    run_id = time.strftime("%Y%m%d%H%M%S")
    topic = f"movies-plot-{run_id}"
    dead_letter_topic = f"dead-letter-topic-movies-plot-{run_id}"
    log(f"creating {topic} ({PARTITIONS} partitions) and {dead_letter_topic}")
    tools.create_topic(args.bootstrap, topic, PARTITIONS)
    tools.create_topic(args.bootstrap, dead_letter_topic, 1)

    health_port = free_port()
    prometheus_port = free_port()
    config = os.path.join(work, "prometheus.yml")
    with open(config, "w") as file:
        file.write(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
            "scrape_configs:\n  - job_name: movies\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{health_port}']\n"
        )
    prometheus_url = f"http://127.0.0.1:{prometheus_port}"
    prometheus = processes.start(
        "prometheus",
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={os.path.join(work, 'data')}",
            f"--web.listen-address=127.0.0.1:{prometheus_port}",
        ],
    )
    wait_for("Prometheus ready", lambda: http_get(prometheus_url + "/-/ready"), 60, [prometheus])

    # The example's configuration is this script's alone: it refuses MESSAGING_* variables it
    # does not know.
    env = {name: value for name, value in os.environ.items() if not name.startswith("MESSAGING_")}
    env.update(
        {
            "RUST_LOG": "info",
            "MESSAGING_CONNECTOR_KAFKA_BOOTSTRAP_SERVERS": args.bootstrap,
            "MESSAGING_INCOMING_MOVIES_FAILURE_STRATEGY": "dead-letter-queue",
            "MESSAGING_INCOMING_MOVIES_TOPIC": topic,
            "MESSAGING_OUTGOING_MOVIES_OUT_TOPIC": topic,
            "MESSAGING_INCOMING_MOVIES_DEAD_LETTER_QUEUE_TOPIC": dead_letter_topic,
            "MESSAGING_INCOMING_DEAD_LETTER_TOPIC_MOVIES_TOPIC": dead_letter_topic,
            "MESSAGING_APPLICATION_NAME": f"movies-plot-{run_id}",
            "MESSAGING_HEALTH_PORT": str(health_port),
            "MESSAGING_CONNECTOR_KAFKA_SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
        }
    )
    movies = processes.start("movies", [args.movies], env=env)
    metrics_url = f"http://127.0.0.1:{health_port}/metrics"
    # Joined its group, assigned and measured once: the lag series of the movies channel is there.
    wait_for(
        "the movies channel's first consumer lag",
        lambda: 'messaging_consumer_lag{channel="movies"' in (http_get(metrics_url) or ""),
        90,
        [movies, prometheus],
    )
    log("movies example consuming; quiet lead-in")
    plot_start = time.time()
    time.sleep(LEAD_SECONDS)

    producer = processes.start(
        "producer", tools.console_producer(args.bootstrap, topic), stdin=subprocess.PIPE
    )
    stop = {"from": None, "to": None}

    def on_tick(elapsed):
        # The stop and the continue happen on the producer's clock.
        if stop["from"] is None and elapsed >= STOP_AT:
            movies.send_signal(signal.SIGSTOP)
            stop["from"] = time.time()
            log("movies example stopped (SIGSTOP)")
        elif stop["to"] is None and stop["from"] is not None and elapsed >= STOP_AT + STOP_SECONDS:
            movies.send_signal(signal.SIGCONT)
            stop["to"] = time.time()
            log("movies example continued (SIGCONT)")

    def check_alive():
        for process in (movies, prometheus, producer):
            process.check_alive()

    log("producing: " + ", then ".join(f"{rate}/s for {seconds} s" for rate, seconds in PHASES))
    phase_starts, titles = produce(producer, PHASES, on_tick, check_alive)
    produce_end = time.time()
    # End of input: the console producer sends what it still holds and exits.
    producer.stdin.close()
    producer.wait(timeout=30)
    log(f"{titles} titles written; quiet tail")
    time.sleep(TAIL_SECONDS)
    movies.check_alive()
    prometheus.check_alive()
    plot_end = time.time()

    def query_range(query):
        parameters = urllib.parse.urlencode(
            {"query": query, "start": plot_start, "end": plot_end, "step": "1s"}
        )
        body = http_get(f"{prometheus_url}/api/v1/query_range?{parameters}", timeout=30)
        if body is None:
            raise RuntimeError(f"Prometheus did not answer {query}")
        return json.loads(body)["data"]["result"]

    data = {
        "start": plot_start,
        "end": plot_end,
        "phases": [
            {"from": start, "rate": rate}
            for start, (rate, _) in zip(phase_starts, PHASES)
        ],
        "produce_end": produce_end,
        "stop": [stop["from"], stop["to"]],
        "titles": titles,
        "partitions": PARTITIONS,
        "session_timeout_ms": SESSION_TIMEOUT_MS,
        "topic": topic,
        "dead_letters": query_range(DEAD_LETTER_QUERY),
        "lag": query_range(LAG_QUERY),
        "dead_lettered_total": query_range(
            'sum(messaging_records_dead_lettered_total{channel="movies"})'
        ),
    }
    path = os.path.join(work, "data.json")
    with open(path, "w") as file:
        json.dump(data, file)
    log(f"query results in {path}")
    return data


# ---- the picture --------------------------------------------------------------------------------

WIDTH, HEIGHT = 900, 700
LEFT, RIGHT = 70, 880
COLOURS = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]


def nice_top(value):
    """The top of the y axis and its gridline step (1, 2 or 5 times a power of ten), for at most
    6 steps."""
    value = max(value, 1e-9)
    magnitude = 10 ** len(str(int(value))) / 10 if value >= 1 else 1
    for step in (0.1, 0.2, 0.5, 1, 2, 5, 10):
        step *= magnitude
        if value / step <= 6:
            return step * max(1, -(-value // step)), step
    return value, value / 5


def number(value):
    return f"{value:g}" if value < 10000 else f"{int(value)}"


def panel(out, top, height, heading, unit, series, data):
    """One plot: gridlines, the stop and producer phases, and a polyline per series, broken where
    Prometheus had no sample (a missed scrape)."""
    bottom = top + height
    start, end = data["start"], data["end"]

    def x(t):
        return LEFT + (t - start) / (end - start) * (RIGHT - LEFT)

    peak = max((value for _, points in series for _, value in points), default=0)
    ymax, ystep = nice_top(peak * 1.1)

    def y(value):
        return bottom - value / ymax * height

    out.append(f'<text x="{LEFT}" y="{top - 12}" font-size="14" font-weight="bold">{escape(heading)}</text>')
    for index in range(round(ymax / ystep) + 1):
        tick = index * ystep
        out.append(f'<line x1="{LEFT}" x2="{RIGHT}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{number(tick)}</text>')
    minute = 0
    while start + minute * 60 <= end:
        position = x(start + minute * 60)
        out.append(f'<line x1="{position:.1f}" x2="{position:.1f}" y1="{top}" y2="{bottom}" stroke="#eee"/>')
        out.append(f'<text x="{position:.1f}" y="{bottom + 16}" text-anchor="middle">{minute} min</text>')
        minute += 1
    out.append(
        f'<text x="16" y="{top + height / 2:.1f}" transform="rotate(-90 16 {top + height / 2:.1f})" '
        f'text-anchor="middle">{escape(unit)}</text>'
    )
    out.append(f'<rect x="{LEFT}" y="{top}" width="{RIGHT - LEFT}" height="{height}" fill="none" stroke="#888"/>')

    # The producer's phases: a dashed line where the rate changes, the rate at its top left.
    edges = [phase["from"] for phase in data["phases"]] + [data["produce_end"]]
    for index, edge in enumerate(edges):
        out.append(f'<line x1="{x(edge):.1f}" x2="{x(edge):.1f}" y1="{top}" y2="{bottom}" stroke="#aaa" stroke-dasharray="4 3"/>')
        if index < len(data["phases"]):
            out.append(
                f'<text x="{x(edge) + 4:.1f}" y="{top + 14}" fill="#777">'
                f'producer: {data["phases"][index]["rate"]} titles/s</text>'
            )

    # The stop, labelled half-way down: no line crosses there, nothing was scraped.
    stopped_from, stopped_to = data["stop"]
    left, right = x(stopped_from), x(stopped_to)
    middle = top + height / 2
    out.append(f'<rect x="{left:.1f}" y="{top}" width="{right - left:.1f}" height="{height}" fill="#999" opacity="0.2"/>')
    out.append(f'<text x="{(left + right) / 2:.1f}" y="{middle - 4:.1f}" text-anchor="middle" fill="#555">consumer</text>')
    out.append(f'<text x="{(left + right) / 2:.1f}" y="{middle + 10:.1f}" text-anchor="middle" fill="#555">stopped</text>')

    for index, (label, points) in enumerate(series):
        colour = COLOURS[index % len(COLOURS)]
        # Earlier series drawn wider, so that one covered by a later one with the same values
        # (partitions with the same lag) still shows at its edges.
        width = 1.6 + 0.8 * (len(series) - 1 - index)
        run = []
        previous = None
        for t, value in points + [(None, None)]:
            # Samples come every second: a longer step is a gap with no sample.
            if t is None or (previous is not None and t - previous > 1.5):
                if len(run) > 1:
                    out.append(
                        f'<polyline fill="none" stroke="{colour}" stroke-width="{width:.1f}" points="{" ".join(run)}"/>'
                    )
                run = []
            if t is not None:
                run.append(f"{x(t):.1f},{y(value):.1f}")
            previous = t
        out.append(
            f'<text x="{RIGHT - 8}" y="{top + 16 + 14 * index}" text-anchor="end" fill="{colour}">{escape(label)}</text>'
        )


def series_of(result, label):
    """[(label, [(t, value)])] from a query_range result, sorted by label."""
    series = [
        (label(item["metric"]), [(float(t), float(v)) for t, v in item["values"]])
        for item in result
    ]
    return sorted(series)


def svg(data):
    dead_letters = series_of(data["dead_letters"], lambda metric: metric.get("error_type", "?"))
    lag = series_of(
        data["lag"], lambda metric: f'partition {metric.get("partition", "?")}'
    )
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
    ]
    panel(out, 60, 250, "Dead-lettered records per second, by error type (rate over 10 s)",
          "records/s", dead_letters, data)
    panel(out, 390, 250, "Consumer lag per partition (measured against the broker every 5 s)",
          "records", lag, data)
    caption = [
        f"The movies example (dead-letter-queue) on Apache Kafka, {data['partitions']} partitions, scraped every second by Prometheus. A producer adds",
        "20, then 150, then 20 titles/s, 1 in 20 rejected (a ' or a , in it); the consumer is stopped (SIGSTOP) for 30 s, unscraped.",
    ]
    for index, line in enumerate(caption):
        out.append(f'<text x="{LEFT}" y="{676 + 16 * index}" fill="#555">{escape(line)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def summary(data):
    """What the picture shows, in numbers, for whoever writes its caption."""
    start = data["start"]
    lines = [f"run: {data['end'] - start:.0f} s plotted, {data['titles']} titles produced"]
    stopped_from, stopped_to = data["stop"]
    lines.append(f"stopped: {stopped_from - start:.0f} s to {stopped_to - start:.0f} s")
    for label, points in series_of(data["lag"], lambda m: f"partition {m.get('partition')}"):
        t, value = max(points, key=lambda point: point[1])
        after = [p for p in points if p[0] > t and p[1] <= 0.05 * value]
        drained = f", back under 5 % of it at {after[0][0] - start:.0f} s" if after else ""
        lines.append(f"lag {label}: peak {value:.0f} at {t - start:.0f} s{drained}")
    for label, points in series_of(data["dead_letters"], lambda m: m.get("error_type", "?")):
        t, value = max(points, key=lambda point: point[1])
        lines.append(f"dead letters {label}: peak {value:.1f}/s at {t - start:.0f} s")
        edges = [phase["from"] for phase in data["phases"]] + [data["produce_end"]]
        for index, phase in enumerate(data["phases"]):
            # Away from the edges and the stop, where the 10 s window mixes rates.
            inside = [
                v for t, v in points
                if edges[index] + 15 < t < edges[index + 1]
                and not stopped_from - 5 < t < stopped_to + 30
            ]
            if inside:
                lines.append(
                    f"  while producing {phase['rate']}/s: mean {sum(inside) / len(inside):.2f}/s"
                )
    totals = data.get("dead_lettered_total") or []
    if totals:
        lines.append(f"dead-lettered in all: {float(totals[0]['values'][-1][1]):.0f}")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap", help="the Kafka broker, host:port")
    parser.add_argument("--movies", help="the movies example binary")
    parser.add_argument(
        "--kafka-home",
        default=os.environ.get(
            "KAFKA_HOME", os.path.expanduser("~/.cache/messaging-tools/apache-kafka-4.1.1")
        ),
        help="an Apache Kafka distribution, or a directory with its jars in libs/",
    )
    parser.add_argument("--out", default="monitoring/movies-dlq-and-lag.svg")
    parser.add_argument("--replot", metavar="DATA_JSON", help="draw from an earlier run's data.json")
    args = parser.parse_args()

    if args.replot:
        with open(args.replot) as file:
            data = json.load(file)
    else:
        if not args.bootstrap or not args.movies:
            parser.error("--bootstrap and --movies are needed for a run")
        if shutil.which("prometheus") is None:
            parser.error("prometheus is not on PATH")
        data = run(args)
    with open(args.out, "w") as file:
        file.write(svg(data))
    log(f"wrote {args.out}")
    print(summary(data))


if __name__ == "__main__":
    main()
