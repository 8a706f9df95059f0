"""The project's fine-tuning task: turn a sentence about a person into a fixed JSON card.

The base model cannot do it unprompted (it does not know the format); a short LoRA run can. The held-out split
uses first names, surnames and cities that never occur in training, so passing it means the format was learned,
not the examples. Deterministic: the same seed writes the same files.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from engine.finetune.data import Example


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


FIRST = _words(
    """
    Alice Bruno Clara Dmitri Elena Farid Greta Hugo Ines Jonas Kaito Lena Marco Nadia Oscar Priya Quentin Rosa
    Adrian Bianca Carmen Daniel Edith Felix Gloria Henrik Irene Julian Karin Leon Maya Nico Olga Pedro Rita
    Stefan Tanja Ugo Valentina Walter Yara Zeno Amir Brigitte Cosmin Dora Erik Flora Gustav Hana Ivan Jasmin
    Klaus Lara Milan Nina Otto Pia Ramon Selma Timo Uma Vincent Wiebke Xavier Yvonne Samir Tessa Umar Vera
    Wilhelm Ximena Yusuf Zora Anton Beatriz Cyril Dalia Emil Fatima Goran Helga Igor Jana Kofi Lucia Mateo Nora
    Olaf Paula Rafael Sofia Tomas Ulla Viktor Wanda
    """
)
LAST = _words(
    """
    Moreau Novak Silva Berg Kowalski Rossi Jensen Haddad Tanaka Okafor Laurent Fischer Costa Petrov Lindqvist
    Albrecht Barros Conti Dahl Eriksen Falk Gallo Holm Ibarra Jakobsen Kraus Lopes Meyer Nowak Olsen Pereira
    Quiroga Ruiz Sorensen Toth Urban Vogel Wagner Zeller Aalto Brandt Cardoso Delgado Engel Fontana Gomez Hansen
    Iglesias Jung Kuhn Lombardi Marques Nielsen Pavlov Reyes Sala Teixeira Vasquez Winter Zimmer Berger Moretti
    Hartmann Moreno Schmidt Dubois Horvat Nakamura Varga Santos Keller Mendes Andersen Ivanova Romero Weber
    Marino Nilsson Popescu Yilmaz Almeida Kovac Larsen Ortega Becker Greco Svensson Duarte Hoffmann Bianchi
    Ferreira Lund Jovanovic Castro Richter Vidal
    """
)
CITIES = _words(
    """
    Lyon Porto Krakow Bergen Turin Ghent Malmo Graz Seville Brno Leeds Bilbao Tartu Split Aarhus Basel Cork
    Arles Bruges Chur Delft Evora Ferrara Gijon Haarlem Innsbruck Jena Kassel Lucca Mainz Namur Oulu Padua Reims
    Siena Trier Umea Verona Wroclaw Zadar Aachen Bergamo Caen Dijon Erfurt Faro Girona Hamar Ancona Nantes
    Bologna Utrecht Riga Gdansk Salzburg Valencia Lille Genoa Tampere Dresden Coimbra Zagreb Odense Pula Bremen
    Cadiz Ljubljana Vilnius
    """
)
TEMPLATES = (
    "{first} {last} lives in {city}.",
    "{city} is home to {first} {last}.",
    "Meet {first} {last} from {city}.",
    "{first} {last} moved to {city} last year.",
    "Our new colleague {first} {last} works in {city}.",
    "In {city} you will find {first} {last}.",
)
INSTRUCTION = "Make a contact card: "
HELDOUT_SHARE = 1 / 3


def card(first: str, last: str, city: str) -> str:
    """The one correct answer for a person (the format the model must learn)."""
    return json.dumps({"first": first, "last": last, "city": city})


def _split(names: tuple[str, ...] | list[str]) -> tuple[list[str], list[str]]:
    cut = round(len(names) * (1 - HELDOUT_SHARE))
    return list(names[:cut]), list(names[cut:])


def examples(count: int, heldout: bool, seed: int) -> list[Example]:
    """`count` conversations from the training names, or from the held-out ones."""
    rng = random.Random(seed)
    pools = [_split(names)[heldout] for names in (FIRST, LAST, CITIES)]
    out = []
    for _ in range(count):
        first, last, city = (rng.choice(pool) for pool in pools)
        sentence = rng.choice(TEMPLATES).format(first=first, last=last, city=city)
        out.append(
            Example(
                (
                    {"role": "user", "content": INSTRUCTION + sentence},
                    {"role": "assistant", "content": card(first, last, city)},
                )
            )
        )
    return out


def write_jsonl(path: str | Path, rows: list[Example]) -> Path:
    """OpenAI's chat fine-tuning format, one conversation per line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"messages": list(e.messages)}) + "\n" for e in rows))
    return path


def is_correct(example: Example, reply: str) -> bool:
    """Exact task success: the reply parses as JSON and equals the expected card."""
    try:
        return json.loads(reply.strip()) == json.loads(example.messages[-1]["content"])
    except json.JSONDecodeError:
        return False
