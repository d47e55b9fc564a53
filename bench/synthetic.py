"""A deterministic synthetic billing export: districts.csv, switches.csv, subscribers.csv.

The topology is a small ISP's: a few core switches, one aggregation switch
per district hanging off a core, and access switches behind the aggregation
switches. Switch addresses are distinct loopback addresses (127.0.0.0/8),
written as text only; nothing is ever contacted.

Subscriber numbers are unique Russian numbers from many operator prefixes
(mobile DEF codes 9xx, Moscow landlines 495/499) with the remaining seven
digits uniform at random, written in the mixed formats billing systems
produce (``+7 (916) 123-45-67``, ``79161234567``, ``89161234567``,
``9161234567``, ``8 (495) 123-45-67`` ...). Uniform random digits mean that
nothing (shape caches, bucket placement) gets an easy ride.

``python -m bench.synthetic DIR`` writes the files into DIR.
"""

from __future__ import annotations

import argparse
import csv
import ipaddress
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_DISTRICTS = 50
DEFAULT_SWITCHES = 10_000
DEFAULT_SUBSCRIBERS = 1_000_000
DEFAULT_SEED = 20_240_601
CORE_SWITCHES = 2

#: Mobile DEF codes in use in Russia (several operators each).
MOBILE_CODES: tuple[int, ...] = (
    *range(900, 907), *range(908, 940), 941, *range(950, 954), *range(955, 970),
    977, 978, *range(980, 990), *range(991, 998), 999,
)  # fmt: skip
#: Moscow landline codes.
LANDLINE_CODES: tuple[int, ...] = (495, 499)
#: Share of subscribers on a landline.
LANDLINE_SHARE = 0.08

_SEVEN = 10**7
_FIRST_ADDRESS = int(ipaddress.IPv4Address("127.1.0.1"))
_LAST_ADDRESS = int(ipaddress.IPv4Address("127.255.255.254"))

_DISTRICT_NAMES = (
    "Центральный", "Северный", "Южный", "Заречный", "Восточный", "Западный",
    "Лесной", "Речной", "Садовый", "Парковый", "Заводской", "Вокзальный",
    "Октябрьский", "Ленинский", "Советский", "Кировский", "Нагорный", "Луговой",
    "Сосновый", "Берёзовый", "Озёрный", "Полевой", "Солнечный", "Молодёжный",
    "Привокзальный",
)  # fmt: skip


def _groups(rest: int) -> str:
    s = f"{rest:07d}"
    return f"{s[:3]}-{s[3:5]}-{s[5:]}"


def render(national: int, rng: random.Random) -> str:
    """A 10-digit Russian national number written the way billing might write it."""
    code, rest = divmod(national, _SEVEN)
    x = rng.random()
    if code in LANDLINE_CODES:
        if x < 0.5:
            return f"8 ({code}) {_groups(rest)}"
        if x < 0.75:
            return f"+7 ({code}) {_groups(rest)}"
        return f"8{national}"
    if x < 0.35:
        return f"+7 ({code}) {_groups(rest)}"
    if x < 0.55:
        return f"7{national}"
    if x < 0.80:
        return f"8{national}"
    return str(national)


def e164_digits(national: int) -> str:
    """What the import stores for a national number: E.164 digits without the plus."""
    return f"7{national}"


def random_national(rng: random.Random) -> int:
    """A Russian national number: an operator code (8 % landline) and 7 uniform digits."""
    codes = LANDLINE_CODES if rng.random() < LANDLINE_SHARE else MOBILE_CODES
    return rng.choice(codes) * _SEVEN + rng.randrange(_SEVEN)


@dataclass
class Synthetic:
    """What was written, so that benchmarks can ask about known subscribers."""

    folder: Path
    districts: list[str] = field(default_factory=list)
    switch_ids: list[str] = field(default_factory=list)
    numbers: list[int] = field(default_factory=list)
    """10-digit national numbers, in file order"""
    switch_of: list[int] = field(default_factory=list)
    """per subscriber, the index of its switch in ``switch_ids``"""

    @property
    def districts_csv(self) -> Path:
        return self.folder / "districts.csv"

    @property
    def switches_csv(self) -> Path:
        return self.folder / "switches.csv"

    @property
    def subscribers_csv(self) -> Path:
        return self.folder / "subscribers.csv"

    def bytes_on_disk(self) -> int:
        return sum(
            p.stat().st_size for p in (self.districts_csv, self.switches_csv, self.subscribers_csv)
        )


def check_sizes(districts: int, switches: int, subscribers: int) -> str | None:
    """Why these sizes cannot be generated, or None."""
    if districts < 1:
        return "--districts must be at least 1"
    if switches < CORE_SWITCHES + districts + 1:
        return (
            f"--switches must be at least {CORE_SWITCHES + districts + 1}: {CORE_SWITCHES} core,"
            f" one aggregation switch per district and at least one access switch"
        )
    if switches > _LAST_ADDRESS - _FIRST_ADDRESS:
        return "--switches: more switches than loopback addresses"
    if subscribers < 0:
        return "--subscribers must not be negative"
    if subscribers > (len(MOBILE_CODES) + len(LANDLINE_CODES)) * _SEVEN // 4:
        return "--subscribers: too many to draw unique numbers at random"
    return None


def generate(
    folder: Path,
    districts: int = DEFAULT_DISTRICTS,
    switches: int = DEFAULT_SWITCHES,
    subscribers: int = DEFAULT_SUBSCRIBERS,
    seed: int = DEFAULT_SEED,
) -> Synthetic:
    """Write the three CSV files into ``folder``; the same arguments give the same bytes."""
    problem = check_sizes(districts, switches, subscribers)
    if problem:
        raise ValueError(problem)
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = Synthetic(folder)

    with out.districts_csv.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(("id", "name"))
        for i in range(districts):
            base = _DISTRICT_NAMES[i % len(_DISTRICT_NAMES)]
            round_ = i // len(_DISTRICT_NAMES)
            name = base if round_ == 0 else f"{base}-{round_ + 1}"
            district_id = f"d{i + 1:02d}"
            out.districts.append(district_id)
            writer.writerow((district_id, name))

    access: list[int] = []
    with out.switches_csv.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(("id", "address", "district", "parent"))

        def add(switch_id: str, district: str, parent: str) -> int:
            index = len(out.switch_ids)
            address = ipaddress.IPv4Address(_FIRST_ADDRESS + index)
            writer.writerow((switch_id, str(address), district, parent))
            out.switch_ids.append(switch_id)
            return index

        cores = [add(f"core-{c + 1}", out.districts[0], "") for c in range(CORE_SWITCHES)]
        aggregation = [
            add(f"agg-{d}", d, out.switch_ids[cores[i % len(cores)]])
            for i, d in enumerate(out.districts)
        ]
        for n in range(switches - len(cores) - len(aggregation)):
            d = n % districts
            district = out.districts[d]
            parent = out.switch_ids[aggregation[d]]
            access.append(add(f"acc-{district}-{n // districts + 1:04d}", district, parent))

    taken: set[int] = set()
    with out.subscribers_csv.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(("phone", "switch", "account"))
        rows: list[tuple[str, str, int]] = []
        for i in range(subscribers):
            national = random_national(rng)
            while national in taken:
                national = random_national(rng)
            taken.add(national)
            switch = access[rng.randrange(len(access))]
            out.numbers.append(national)
            out.switch_of.append(switch)
            rows.append((render(national, rng), out.switch_ids[switch], 1_000_000 + i))
            if len(rows) >= 50_000:
                writer.writerows(rows)
                rows.clear()
        writer.writerows(rows)
    return out


def add_size_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--districts", type=int, default=DEFAULT_DISTRICTS, metavar="N")
    parser.add_argument("--switches", type=int, default=DEFAULT_SWITCHES, metavar="N")
    parser.add_argument("--subscribers", type=int, default=DEFAULT_SUBSCRIBERS, metavar="N")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.synthetic", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("folder", type=Path)
    add_size_arguments(parser)
    args = parser.parse_args(argv)
    problem = check_sizes(args.districts, args.switches, args.subscribers)
    if problem:
        parser.error(problem)
    made = generate(args.folder, args.districts, args.switches, args.subscribers, args.seed)
    print(
        f"wrote {len(made.districts):,} districts, {len(made.switch_ids):,} switches,"
        f" {len(made.numbers):,} subscribers ({made.bytes_on_disk() / 1e6:.1f} MB) to {args.folder}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
