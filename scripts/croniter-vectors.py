#!/usr/bin/env python3
"""Generate the croniter agreement vectors for upkeep's cron matcher (issue #20).

Writes shared/tests/cron/croniter_vectors.txt: random crontab expressions, each evaluated in
UTC, Europe/Berlin, America/New_York and Australia/Lord_Howe from a start time chosen near a
DST transition half of the time, with the next fire times croniter computes. The Rust test
(shared/tests/cron/agreement.rs) replays them through `ScheduleSpec` and explains every
difference (see README, "Cron expressions").

    pip install 'croniter==7.0.0'          # the version the committed file was made with
    scripts/croniter-vectors.py            # rewrites the file (deterministic: fixed seed)
    scripts/croniter-vectors.py --check    # regenerates in memory and compares with the file

croniter is called with implement_cron_bug=True: a day field beginning with `*` (`*/2`) then
counts as unrestricted and the two day fields combine with AND, which is what Vixie cron and
cronie do and what upkeep does. second_at_beginning=True reads six-field lines as upkeep does.

The generator leaves out three forms on which croniter deliberately differs from crontab and
from upkeep (README lists them): an equal range such as `5-5` (croniter: the whole field), a
range that runs backwards such as `22-2` (croniter wraps around; upkeep refuses it), and `L`,
`W`, `#` (Quartz extensions upkeep refuses).

File format, one case per line, tab-separated:
    zone  start  expression  fires
`start` is Unix seconds; `fires` lists the fire times as offsets in seconds, the first from
`start` and each next one from the previous fire, with runs written `delta*count`
(`60*49` is 49 fires a minute apart). Fire times stop before 2099-12-01T00:00:00Z, where
upkeep's years end; a case then has fewer than 50. Lines starting with `#` are comments.
"""

import argparse
import datetime as dt
import random
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

from importlib.metadata import version

from croniter import CroniterBadDateError, croniter

SEED = 20
N_EXPRESSIONS = 5000
N_FIRES = 50
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe"]
FIRST = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
LAST = dt.datetime(2031, 1, 1, tzinfo=dt.timezone.utc)
CUTOFF = int(dt.datetime(2099, 12, 1, tzinfo=dt.timezone.utc).timestamp())
OUTPUT = Path(__file__).resolve().parent.parent / "shared/tests/cron/croniter_vectors.txt"

MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]

# name, min, max (day of week: 0-7, 7 being Sunday again), names (value = index + min)
FIELDS = {
    "second": (0, 59, None),
    "minute": (0, 59, None),
    "hour": (0, 23, None),
    "dom": (1, 31, None),
    "month": (1, 12, MONTHS),
    "dow": (0, 7, DAYS),
}


def spell(rng, field, value):
    """A value as a number or, sometimes, as a name in a random case."""
    low, _, names = FIELDS[field]
    if names is None or rng.random() < 0.5:
        return str(value)
    # Day of week 7 is Sunday; `Sun` ending a range means 7 (`Fri-Sun`), starting one 0.
    index = 0 if (field == "dow" and value == 7) else value - low
    name = names[index]
    return rng.choice([name, name.upper(), name.capitalize()])


def value_range(rng, field):
    low, high, _ = FIELDS[field]
    first = rng.randint(low, high - 1)
    last = rng.randint(first + 1, high)  # never an equal range: croniter reads `5-5` as `*`
    return first, last


def element(rng, field, allow_star):
    """One list element of a field, in any of crontab's forms."""
    low, high, _ = FIELDS[field]
    top = 6 if field == "dow" else high
    forms = ["value", "range", "range_step", "start_step"]
    if allow_star:
        forms += ["star", "star_step"]
    form = rng.choice(forms)
    span = high - low + 1
    step = rng.choice([1, 2, 3, 4, 5, 7, 10, 15, span // 2 or 1, span + 3])
    if form == "star":
        return "*"
    if form == "star_step":
        return f"*/{step}"
    if form == "value":
        return spell(rng, field, rng.randint(low, high))
    if form == "start_step":
        return f"{spell(rng, field, rng.randint(low, top))}/{step}"
    first, last = value_range(rng, field)
    text = f"{spell(rng, field, first)}-{spell(rng, field, last)}"
    return text if form == "range" else f"{text}/{step}"


def field_text(rng, field, star_weight):
    """A whole field: `*` (with weight star_weight), `?` now and then, one element or a list."""
    if rng.random() < star_weight:
        if field in ("dom", "dow") and rng.random() < 0.1:
            return "?"
        return "*"
    if rng.random() < 0.3:
        return ",".join(element(rng, field, False) for _ in range(rng.randint(2, 4)))
    return element(rng, field, True)


def expression(rng):
    shorthand = rng.random()
    if shorthand < 0.02:
        return rng.choice(
            ["@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"]
        )
    fields = [
        field_text(rng, "minute", 0.25),
        field_text(rng, "hour", 0.4),
        field_text(rng, "dom", 0.55),
        field_text(rng, "month", 0.6),
        field_text(rng, "dow", 0.55),
    ]
    if rng.random() < 0.4:
        fields.insert(0, field_text(rng, "second", 0.3))
    return " ".join(fields)


def transitions(zone):
    """UTC instants (whole minutes) at which the zone's offset changes between FIRST and LAST."""
    tz = ZoneInfo(zone)
    found = []
    at = FIRST
    offset = at.astimezone(tz).utcoffset()
    while at < LAST:
        later = at + dt.timedelta(hours=1)
        if later.astimezone(tz).utcoffset() != offset:
            minute = at
            while minute.astimezone(tz).utcoffset() == offset:
                minute += dt.timedelta(minutes=1)
            found.append(minute)
            offset = later.astimezone(tz).utcoffset()
        at = later
    return found


def start_time(rng, zone_transitions):
    if zone_transitions and rng.random() < 0.5:
        transition = rng.choice(zone_transitions)
        before = rng.choice([2 * 3600, 2 * 86400, 40 * 86400])
        return int(transition.timestamp()) - rng.randint(0, before)
    return rng.randint(int(FIRST.timestamp()), int(LAST.timestamp()))


def fires(expr, zone, start):
    tz = ZoneInfo(zone)
    six = len(expr.split()) == 6
    iterator = croniter(
        expr,
        dt.datetime.fromtimestamp(start, tz),
        ret_type=dt.datetime,
        implement_cron_bug=True,
        second_at_beginning=six,
        max_years_between_matches=100,
    )
    found = []
    try:
        while len(found) < N_FIRES:
            fire = int(iterator.get_next().timestamp())
            if fire >= CUTOFF:
                break
            found.append(fire)
    except CroniterBadDateError:
        pass
    return found


def encode(start, fire_times):
    deltas = []
    previous = start
    for fire in fire_times:
        deltas.append(fire - previous)
        previous = fire
    runs = []
    for delta in deltas:
        if runs and runs[-1][0] == delta:
            runs[-1][1] += 1
        else:
            runs.append([delta, 1])
    return ",".join(str(d) if n == 1 else f"{d}*{n}" for d, n in runs)


def generate():
    rng = random.Random(SEED)
    zone_transitions = {zone: transitions(zone) for zone in ZONES}
    lines = [
        f"# croniter {version('croniter')}"
        f" vectors from scripts/croniter-vectors.py (seed {SEED}); do not edit by hand",
    ]
    expressions = set()
    while len(expressions) < N_EXPRESSIONS:
        expr = expression(rng)
        if expr in expressions:
            continue
        found_any = False
        cases = []
        for zone in ZONES:
            start = start_time(rng, zone_transitions[zone])
            fire_times = fires(expr, zone, start)
            found_any = found_any or bool(fire_times)
            cases.append(f"{zone}\t{start}\t{expr}\t{encode(start, fire_times)}")
        if not found_any:
            continue  # never fires (upkeep refuses it; the unit tests cover that)
        expressions.add(expr)
        lines.extend(cases)
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed file")
    args = parser.parse_args()
    text = generate()
    if args.check:
        if OUTPUT.read_text() != text:
            sys.exit(f"{OUTPUT} differs from what this script generates")
        print(f"{OUTPUT} is up to date")
        return
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT} ({len(text)} bytes)")


if __name__ == "__main__":
    main()
