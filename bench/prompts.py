"""A fixed mix of prompts: plain text to continue (no chat template), of varied length,
so every contender does the same work and SmolLM2 keeps writing for 64 tokens."""

from __future__ import annotations

PROMPTS: tuple[str, ...] = (
    "The history of the Roman Empire begins with",
    "In a small village at the foot of the mountains, there lived an old clockmaker who",
    "Photosynthesis is the process by which green plants and some other organisms use "
    "sunlight to synthesize foods from carbon dioxide and water. In this article we explain",
    'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n',
    "Here is a list of ten tips for staying productive when working from home:\n1.",
    "The three most important inventions of the nineteenth century were",
    "Once upon a time, a young programmer discovered that her computer could talk. "
    "The first thing it said was",
    "To bake a simple loaf of bread you will need flour, water, salt and yeast. First,",
    "The ocean covers more than seventy percent of the surface of the Earth, and",
    "A good night's sleep matters because",
    "The city council met on Tuesday evening to discuss the new bicycle lanes. Residents",
    "Dear hiring manager,\n\nI am writing to apply for the position of",
)

MAX_TOKENS = 64


def prompt_for(client: int, round_: int) -> str:
    """Client `client`'s prompt in round `round_`: a fixed, reproducible assignment."""
    return PROMPTS[(client * 5 + round_ * 7) % len(PROMPTS)]
