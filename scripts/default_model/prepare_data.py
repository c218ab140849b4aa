#!/usr/bin/env python3
"""Turn the raw dumps made by prepare_data.sh into the training corpus and the held-out file.

Inputs (in RAW_DIR, written by prepare_data.sh):
  kjv.txt                 `bible -l0 gen1:1-rev22:21`   (Debian bible-kjv / bible-kjv-text)
  web.imp                 `mod2imp engWEB2015eb`        (Debian sword-text-web, via libsword-utils)
  austen_<novel>.txt      janeaustenr's six novels       (Debian r-cran-janeaustenr, via Rscript)
  devil.txt               zcat devil.dict.dz             (Debian dict-devil)

Outputs:
  scripts/default_model/data/corpus.jsonl.xz   one JSON object per document: {"source", "title", "text"}
  models/lamina-tiny-llama/heldout.txt         KJV Jonah 1-4 + the opening of Persuasion ch. 24;
                                               both are excluded from the corpus (WEB Jonah too).
Pure standard library; deterministic.
"""
import json
import lzma
import os
import re
import sys

HELDOUT_BOOK = "Jonah"                    # whole book, KJV and WEB, kept out of training
HELDOUT_NOVEL, HELDOUT_CHAPTER = "persuasion", "Chapter 24"
HELDOUT_AUSTEN_CHARS = 3500               # first paragraphs of that chapter go to heldout.txt

NOVELS = [("sensesensibility", "Sense and Sensibility"), ("prideprejudice", "Pride and Prejudice"),
          ("mansfieldpark", "Mansfield Park"), ("emma", "Emma"),
          ("northangerabbey", "Northanger Abbey"), ("persuasion", "Persuasion")]


def kjv_docs(path):
    """One document per chapter: 'Genesis 1\n\n1 In the beginning ...\n2 ...'."""
    docs, cur_title, verses = [], None, []
    header = re.compile(r"^(\S.*\S) (\d+)$")
    verse = re.compile(r"^\s+(\d+) (.*)$")
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            m = header.match(line)
            if m:
                if cur_title:
                    docs.append((cur_title, verses))
                cur_title, verses = line, []
                continue
            m = verse.match(line)
            if m:
                verses.append((m.group(1), m.group(2).strip()))
            elif line.strip() and verses:          # wrapped continuation (not expected with -l0)
                verses[-1] = (verses[-1][0], verses[-1][1] + " " + line.strip())
    if cur_title:
        docs.append((cur_title, verses))
    return docs


TAG_NOTE = re.compile(r"<note\b.*?</note>", re.S)
TAG_TITLE = re.compile(r"<title\b.*?</title>", re.S)
TAG_ANY = re.compile(r"<[^>]*>")
WS = re.compile(r"\s+")
SPACE_BEFORE_PUNCT = re.compile(r" +([,.;:!?)\]\u201d\u2019])")


def web_docs(path):
    """World English Bible from a SWORD imp dump; notes, headings and Strong's markup removed."""
    chapters = {}      # (book, chapter) -> list of (verse, text), in file order
    order = []
    key = None
    ref = re.compile(r"^\$\$\$(.+) (\d+):(\d+)$")
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("$$$"):
                m = ref.match(line)
                key = None
                if m and m.group(2) != "0" and m.group(3) != "0":
                    key = (m.group(1), m.group(2), m.group(3))
                continue
            if key is None:
                continue
            # A footnote often sits between two words with no space around it ("God<note/>created"):
            # replace it by a space, then take back spaces that land before punctuation.
            text = TAG_ANY.sub("", TAG_TITLE.sub("", TAG_NOTE.sub(" ", line)))
            text = SPACE_BEFORE_PUNCT.sub(r"\1", WS.sub(" ", text)).strip()
            if not text:
                continue
            ck = (key[0], key[1])
            if ck not in chapters:
                chapters[ck] = []
                order.append(ck)
            chapters[ck].append((key[2], text))
    return [(f"{b} {c}", chapters[(b, c)]) for (b, c) in order]


def bible_text(title, verses, label):
    return f"{title} ({label})\n\n" + "\n".join(f"{n} {t}" for n, t in verses) + "\n"


def austen_chapters(path, novel_title):
    """Unwrap hard-wrapped paragraphs, drop _italic_ marks, one document per chapter."""
    with open(path, encoding="utf-8") as f:
        lines = [l.rstrip() for l in f]
    paras, cur = [], []
    for l in lines + [""]:
        if l.strip():
            cur.append(l.strip())
        elif cur:
            paras.append(re.sub(r"  +", " ", " ".join(cur).replace("_", "")))
            cur = []
    chap = re.compile(r"^(CHAPTER|Chapter)\s+[0-9IVXLC]+\.?$")
    docs, title, body = [], None, []
    for p in paras:
        if chap.match(p):
            if title is not None and body:
                docs.append((title, body))
            title, body = p, []
        elif title is not None and not re.match(r"^(VOLUME|Volume)\s+[IVX]+$", p) and p != "Finis":
            body.append(p)
    if title is not None and body:
        docs.append((title, body))
    return [(t, f"{novel_title}, {t}", b) for t, b in docs]


def devil_docs(path, target=4000):
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    start = text.find("PREFACE")
    text = text[start:] if start >= 0 else text
    text = text.replace("_", "")
    text = re.sub(r"(?<=\S)  +", " ", text)          # "word.  Next" -> "word. Next"; keeps verse indents
    blocks = [b.rstrip() for b in re.split(r"\n\s*\n", text) if b.strip()]
    docs, cur = [], []
    for b in blocks:
        cur.append(b)
        if sum(len(x) for x in cur) > target:
            docs.append("\n\n".join(cur) + "\n")
            cur = []
    if cur:
        docs.append("\n\n".join(cur) + "\n")
    return ["The Devil's Dictionary, by Ambrose Bierce\n\n" + d for d in docs]


def main():
    raw, repo = sys.argv[1], sys.argv[2]
    out_corpus = os.path.join(repo, "scripts/default_model/data/corpus.jsonl.xz")
    out_heldout = os.path.join(repo, "models/lamina-tiny-llama/heldout.txt")
    os.makedirs(os.path.dirname(out_corpus), exist_ok=True)
    os.makedirs(os.path.dirname(out_heldout), exist_ok=True)

    docs, heldout = [], []
    for title, verses in kjv_docs(os.path.join(raw, "kjv.txt")):
        text = bible_text(title, verses, "KJV")
        if title.rsplit(" ", 1)[0] == HELDOUT_BOOK:
            heldout.append(text)
        else:
            docs.append({"source": "kjv", "title": title, "text": text})
    for title, verses in web_docs(os.path.join(raw, "web.imp")):
        if title.rsplit(" ", 1)[0] == HELDOUT_BOOK:
            continue
        docs.append({"source": "web", "title": title, "text": bible_text(title, verses, "WEB")})
    for key, novel in NOVELS:
        for chap, title, paras in austen_chapters(os.path.join(raw, f"austen_{key}.txt"), novel):
            text = title + "\n\n" + "\n\n".join(paras) + "\n"
            if key == HELDOUT_NOVEL and chap == HELDOUT_CHAPTER:
                kept, n = [], 0
                for p in paras:
                    if n > HELDOUT_AUSTEN_CHARS:
                        break
                    kept.append(p)
                    n += len(p)
                heldout.append(title + "\n\n" + "\n\n".join(kept) + "\n")
                continue
            docs.append({"source": "austen", "title": title, "text": text})
    for i, text in enumerate(devil_docs(os.path.join(raw, "devil.txt"))):
        docs.append({"source": "devil", "title": f"devil-{i}", "text": text})

    assert len(heldout) == 5, f"expected Jonah 1-4 + one Austen chapter in heldout, got {len(heldout)}"
    with open(out_heldout, "w", encoding="utf-8") as f:
        f.write("\n".join(heldout))
    with lzma.open(out_corpus, "wt", encoding="utf-8", preset=9) as f:
        for d in docs:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")

    stats = {}
    for d in docs:
        s = stats.setdefault(d["source"], [0, 0])
        s[0] += 1
        s[1] += len(d["text"].encode("utf-8"))
    for k, (n, b) in stats.items():
        print(f"{k:8s} {n:6d} docs {b/1e6:7.2f} MB")
    print(f"heldout  {os.path.getsize(out_heldout)} bytes -> {out_heldout}")
    print(f"corpus   {os.path.getsize(out_corpus)/1e6:.2f} MB xz -> {out_corpus}")


if __name__ == "__main__":
    main()
