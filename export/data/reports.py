"""Long synthetic business reports -> a one-sentence summary of their facts.

A report opens with a title naming the company and quarter, then mixes two fact sentences
(how revenue moved and by how much, and which product and city drove it), each in one of
several wordings, among many distractor sentences about the business that carry no facts.
Only the facts make up the summary, so a model must find them anywhere in a long input
(>= 256 tokens) and put them, in order, into the summary's fixed wording. An example is held
out when the hash of its facts falls in the held-out bucket.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from export.data.split import is_held_out

COMPANIES = [
    "Acme",
    "Globex",
    "Initech",
    "Hooli",
    "Vandelay",
    "Wonka",
    "Soylent",
    "Cyberdyne",
    "Tyrell",
    "Oscorp",
    "Aperture",
    "Monarch",
    "Nakatomi",
    "Weyland",
    "Virtucon",
    "Bluth",
    "Genco",
    "Contoso",
    "Fabrikam",
    "Northwind",
    "Litware",
    "Adatum",
    "Proseware",
    "Tailspin",
    "Wingtip",
    "Lucerne",
    "Margie",
    "Trey",
    "Alpine",
    "Fourthcoffee",
]
CITIES = [
    "Oslo",
    "Lima",
    "Cairo",
    "Delhi",
    "Berlin",
    "Madrid",
    "Paris",
    "Rome",
    "Tokyo",
    "Seoul",
    "Sydney",
    "Toronto",
    "Chicago",
    "Boston",
    "Denver",
    "Austin",
    "Dublin",
    "Lisbon",
    "Prague",
    "Vienna",
    "Warsaw",
    "Athens",
    "Nairobi",
    "Lagos",
    "Manila",
    "Jakarta",
    "Hanoi",
    "Bogota",
    "Quito",
    "Santiago",
]
PRODUCTS = [
    "laptops",
    "tablets",
    "bicycles",
    "tractors",
    "printers",
    "heaters",
    "lamps",
    "kettles",
    "drones",
    "cameras",
    "helmets",
    "batteries",
    "scooters",
    "boots",
    "jackets",
    "tents",
    "watches",
    "phones",
    "monitors",
    "routers",
    "speakers",
    "blenders",
    "pumps",
    "valves",
    "sensors",
]
QUARTERS = ("first", "second", "third", "fourth")
DIRECTIONS = ("rose", "fell")
MIN_WORDS = 210  # distractor words; with title, facts and punctuation over 256 tokens

REVENUE = (
    "Revenue at {company} {direction} by {percent} percent compared with the previous quarter.",
    "Compared with the previous quarter, total revenue {direction} by {percent} percent.",
    "The finance team reported that revenue {direction} {percent} percent over the period.",
)
DRIVER = (
    "Most of the change came from sales of {product} in {city}.",
    "Sales of {product} in {city} accounted for most of the change in revenue.",
    "In {city}, demand for {product} explained most of the change in revenue.",
)
DISTRACTORS = (
    "The office moved to a new building near the river.",
    "A new supplier was chosen after a long review.",
    "Staff took part in a safety training in the spring.",
    "The board met several times during the quarter.",
    "Shipping costs stayed about the same as last year.",
    "Customer surveys showed that most buyers were satisfied.",
    "Bad weather delayed several deliveries to customers.",
    "Management expects the market to remain stable.",
    "An internal audit found no major problems with the accounts.",
    "The company hired new engineers for its research group.",
    "Prices for raw materials changed little over the period.",
    "A competitor opened a large store near the main office.",
    "The sales team started a small pilot program with partners.",
    "Inventory was counted twice to check the numbers.",
    "Many employees worked from home on Fridays.",
    "The marketing group ran a campaign on the radio.",
    "A local newspaper wrote a short article about the company.",
    "Energy use in the main factory fell after new lights were installed.",
    "The help desk answered more calls than in the spring.",
    "Several managers visited partners abroad.",
    "The cafeteria added new dishes to its menu.",
    "Two long meetings were held about the new website.",
    "The parking lot was repaired during the summer.",
    "The legal department reviewed the standard contracts.",
)
TITLE = "Quarterly report of {company} for the {quarter} quarter."
SUMMARY = "{company} revenue {direction} {percent} percent in the {quarter} quarter, driven by {product} in {city}."


@dataclass(frozen=True)
class Facts:
    company: str
    quarter: str
    direction: str
    percent: int
    product: str
    city: str

    def key(self) -> str:
        return f"report:{self.company}:{self.quarter}:{self.direction}:{self.percent}:{self.product}:{self.city}"


@dataclass(frozen=True)
class Example:
    facts: Facts
    source: str
    target: str


def draw_facts(rng: random.Random) -> Facts:
    return Facts(
        rng.choice(COMPANIES),
        rng.choice(QUARTERS),
        rng.choice(DIRECTIONS),
        rng.randint(1, 60),
        rng.choice(PRODUCTS),
        rng.choice(CITIES),
    )


def summary(facts: Facts) -> str:
    return SUMMARY.format(**vars(facts))


def report(facts: Facts, rng: random.Random, min_words: int = MIN_WORDS) -> str:
    """Title, then distractors until `min_words`, with the two fact sentences at random places."""
    sentences: list[str] = []
    words = 0
    while words < min_words:
        sentence = rng.choice(DISTRACTORS)
        sentences.append(sentence)
        words += len(sentence.split())
    for template in (rng.choice(REVENUE), rng.choice(DRIVER)):
        sentences.insert(rng.randint(0, len(sentences)), template.format(**vars(facts)))
    return " ".join([TITLE.format(**vars(facts)), *sentences])


def draw_split_example(rng: random.Random, held: bool) -> Example:
    while True:
        facts = draw_facts(rng)
        if is_held_out(facts.key()) == held:
            return Example(facts, report(facts, rng), summary(facts))


def training_example(rng: random.Random) -> Example:
    return draw_split_example(rng, held=False)


def held_out_examples(count: int, seed: int = 1234) -> list[Example]:
    """`count` held-out reports with distinct facts: the evaluation set."""
    rng = random.Random(f"{seed}:reports")
    examples: dict[Facts, Example] = {}
    while len(examples) < count:
        example = draw_split_example(rng, held=True)
        examples.setdefault(example.facts, example)
    return list(examples.values())


def tokenizer_corpus(rng: random.Random, size: int = 2000) -> list[str]:
    texts = []
    for _ in range(size):
        example = draw_split_example(rng, held=False)
        texts.extend((example.source, example.target))
    return texts
