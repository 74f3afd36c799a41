"""The cleaning workbench: a Gradio Blocks page over the scores table, with decisions applied to disk.

Keys: k keep · d delete · r relabel (to the class in the drop-down) · n not a snake · j / → skip · ← back · u undo.
API (gradio_client): /queue(name, limit) · /decide(path, action, new_label) · /undo(n).
"""

from __future__ import annotations

import html
import logging
from pathlib import Path

import gradio as gr
from PIL import Image

from snake_model.loader import ImageLoadError, load_image
from snake_model.mdtext import md_code, md_text
from train.clean import QUEUE_TITLES, QUEUES, check_moves_possible, queues, writable_dir
from train.data import DatasetError
from train.decisions import NOT_SNAKE_DIR, DecisionError, Decisions, folder_name_problem

log = logging.getLogger(__name__)

THUMB = 512

# Runs on page load before `show`. Gradio passes the event's inputs to it and sends on what it returns, so it returns
# them unchanged (returning nothing would make the first card's queue None).
KEYS_JS = """
(...inputs) => {
  if (window.__cleanKeys) return inputs;
  window.__cleanKeys = true;
  const map = {k: "keep", d: "delete", r: "relabel", n: "notsnake", j: "skip", ArrowRight: "skip",
               ArrowLeft: "back", u: "undo"};
  document.addEventListener("keydown", (e) => {
    const t = e.target;
    if (e.ctrlKey || e.metaKey || e.altKey || t.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName)) return;
    const id = map[e.key];
    const el = id && document.getElementById("clean-" + id);
    if (!el) return;
    e.preventDefault();
    (el.tagName === "BUTTON" ? el : el.querySelector("button") || el).click();
  });
  return inputs;
}
"""


class Workbench:
    """Scores rows plus the decisions log: which images are still to review, and where each file is now."""

    def __init__(self, data_dir: str | Path, rows: list[dict], not_snake_dir: str = NOT_SNAKE_DIR):
        self.root = Path(data_dir)
        self.rows = {r["path"]: r for r in rows}
        self.decisions = Decisions(self.root, not_snake_dir=not_snake_dir)
        self.cur = {p: p for p in self.rows}  # original path -> current path
        self.handled: set[str] = set()
        for rec in self.decisions.done():
            self._track(rec)
        self.classes = sorted({r["label"] for r in rows} | {p.name for p in self._class_dirs()})

    def _class_dirs(self) -> list[Path]:
        skip = {"_trash", "_quarantine", "_tmp", self.decisions.not_snake_dir}
        return [d for d in self.root.iterdir() if d.is_dir() and d.name not in skip and not d.name.startswith(".")]

    def _track(self, rec: dict) -> None:
        rev = {v: k for k, v in self.cur.items()}
        orig = rev.get(rec["old_path"])
        if orig is None:
            return
        self.cur[orig] = rec["new_path"]
        if rec["action"] == "undo":
            self.handled.discard(orig)
        else:
            self.handled.add(orig)

    def pending(self, name: str) -> list[dict]:
        if name not in QUEUES:
            raise gr.Error(f"unknown queue {name!r}; choose one of {', '.join(QUEUES)}")
        return [r for r in queues(list(self.rows.values()))[name] if r["path"] not in self.handled]

    def item(self, r: dict) -> dict:
        """What a card shows, as plain values (also the /queue API's row format)."""
        keys = ("label", "pred_label", "pred_conf", "label_quality", "outlier", "outlier_score", "dup_of", "flags")
        # "image_path", not "path": gradio_client would take a dict with a "path" key for a file to download.
        out = {k: r.get(k, "") for k in keys} | {"image_path": self.cur[r["path"]], "original_path": r["path"]}
        out |= {k: r.get(k, "") for k in ("source", "licence", "author")}
        return out

    @property
    def read_only(self) -> bool:
        """Whether the dataset folder cannot be written, so no decision can be applied (review only)."""
        return not (writable_dir(self.root) and writable_dir(self.root / ".clean"))

    def _check_can_move(self, manifest: bool = True) -> None:
        """DecisionError before anything moves when no decision can be applied: the folder is read-only, or (with
        manifest, for a decision that moves a file) its manifest.csv is not UTF-8, so the move would happen and then
        the manifest edit fail."""
        try:
            check_moves_possible(self.root, manifest)
        except DatasetError as e:
            raise DecisionError(str(e)) from e

    def decide(self, path: str, action: str, new_label: str | None = None) -> dict:
        self._check_can_move(manifest=action != "keep")
        rec = self.decisions.decide(path, action, new_label or None)
        self._track(rec)
        return rec

    def undo(self, n: int = 1) -> list[dict]:
        self._check_can_move()
        recs = self.decisions.undo(n)
        for rec in recs:
            self._track(rec)
        return recs


def _thumb(path: Path) -> Image.Image | None:
    try:
        img = load_image(path)
    except ImageLoadError:
        return None
    img.thumbnail((THUMB, THUMB))
    return img


def _num(value: object) -> str:
    """A score from the scores table to 3 significant digits (as literal text when it is not a number)."""
    try:
        return f"{float(value):.3g}"
    except (TypeError, ValueError):
        return md_text(value)


def _card_text(it: dict, name: str, pos: int, total: int) -> str:
    conf = f" ({float(it['pred_conf']):.0%})" if it["pred_conf"] not in ("", None) else ""
    score = {
        "label": f"label quality {_num(it['label_quality'])} (lower is more suspicious)",
        "duplicates": f"near-duplicate of {md_text(it['dup_of'])}",
        "outliers": f"{md_text(it['outlier'])} · outlier score {_num(it['outlier_score'])}",
        "quality": f"flags: {md_text(it['flags'])}",
    }[name]
    lines = [
        f"**{QUEUE_TITLES[name]}** · {pos + 1} of {total}",
        f"file: {md_text(it['image_path'])}",
        f"given **{md_text(it['label'])}** · predicted **{md_text(it['pred_label'])}**{conf}",
        score,
    ]
    prov = " · ".join(f"{k}: {md_text(it[k])}" for k in ("source", "licence", "author") if it.get(k))
    if prov:
        lines.append(prov)
    return "\n\n".join(lines)


def _failure(wb: Workbench, what: str, path: str | None, e: Exception) -> str:
    """The message for an exception a decision was not expected to raise; the traceback goes to the log."""
    log.error("%s failed", what, exc_info=e)
    try:
        there = path is not None and (wb.root / path).is_file()
    except (OSError, ValueError, TypeError):
        there = False
    if path is None:
        where = ""
    elif there:
        where = f" {path} was not moved."
    else:
        where = (
            f" {path} is no longer there: restart the workbench, which finishes or rolls back an interrupted "
            "decision from its log."
        )
    return f"{what} failed ({type(e).__name__}: {e}).{where} The full error is in the workbench's terminal log."


def _count(value: object, name: str, least: int) -> int:
    """An API argument that must be a whole number >= least, else a clear gr.Error."""
    try:
        n = int(value) if not isinstance(value, bool) and float(value) == int(value) else None
    except (TypeError, ValueError, OverflowError):
        n = None
    if n is None or n < least:
        raise gr.Error(f"{name} must be a whole number, at least {least}; got {value!r}")
    return n


def build_ui(data_dir: str | Path, rows: list[dict], not_snake_dir: str = NOT_SNAKE_DIR) -> gr.Blocks:
    """The workbench page for one dataset and its scores rows."""
    wb = Workbench(data_dir, rows, not_snake_dir)

    def show(name: str, pos: int):
        items = wb.pending(name)
        if not items:
            return None, None, f"**{QUEUE_TITLES[name]}**: nothing left to review.", 0, "", gr.update()
        pos = max(0, min(int(pos), len(items) - 1))
        it = wb.item(items[pos])
        partner = _thumb(wb.root / wb.cur.get(it["dup_of"], it["dup_of"])) if it["dup_of"] else None
        guess = it["pred_label"] if it["pred_label"] in wb.classes and it["pred_label"] != it["label"] else None
        return (
            _thumb(wb.root / it["image_path"]),
            partner,
            _card_text(it, name, pos, len(items)),
            pos,
            it["image_path"],
            gr.update(choices=wb.classes, value=guess),
        )

    # Toasts render their message as HTML: names in it are escaped so they show literally. Anything a decision was
    # not expected to raise becomes a gr.Error that says what failed (never gradio's generic "an error occurred").
    def act(action: str):
        def fn(name: str, pos: int, path: str, new_label: str | None):
            if not path:
                return show(name, pos)
            try:
                wb.decide(path, action, new_label)
            except DecisionError as e:
                gr.Warning(html.escape(str(e)))
            except Exception as e:  # noqa: BLE001 - reported to the reviewer, traceback logged
                raise gr.Error(html.escape(_failure(wb, action, path, e)), print_exception=False) from e
            return show(name, pos)

        return fn

    def undo_one(name: str, pos: int):
        try:
            wb.undo(1)
        except DecisionError as e:
            gr.Warning(html.escape(str(e)))
        except Exception as e:  # noqa: BLE001 - reported to the reviewer, traceback logged
            raise gr.Error(html.escape(_failure(wb, "undo", None, e)), print_exception=False) from e
        return show(name, pos)

    read_only = (
        "\n\n**This folder is read-only**: you can review the queues, but no decision can be applied here."
        if wb.read_only
        else ""
    )
    with gr.Blocks(title="Snake dataset cleaning") as demo:
        gr.Markdown(
            f"## Cleaning {md_code(Path(data_dir).name)}\n"
            "Keys: **k** keep · **d** delete (to `_trash/`) · **r** relabel · **n** not a snake · "
            "**j**/→ skip · ← back · **u** undo. Every decision is applied to disk and logged in "
            f"`.clean/decisions.jsonl`.{read_only}"
        )
        with gr.Row():
            queue = gr.Radio([(QUEUE_TITLES[q], q) for q in QUEUES], value="label", label="Queue", scale=3)
            relabel_to = gr.Dropdown(wb.classes, label="Relabel to", scale=2)
        with gr.Row():
            image = gr.Image(type="pil", label="image", height=THUMB, interactive=False)
            partner = gr.Image(type="pil", label="kept copy (duplicates)", height=THUMB, interactive=False)
        info = gr.Markdown()
        pos = gr.State(0)
        path = gr.Textbox(visible=False)
        with gr.Row():
            b_keep = gr.Button("Keep (k)", elem_id="clean-keep")
            b_del = gr.Button("Delete (d)", elem_id="clean-delete", variant="stop")
            b_rel = gr.Button("Relabel (r)", elem_id="clean-relabel", variant="primary")
            b_ns = gr.Button("Not a snake (n)", elem_id="clean-notsnake")
            b_back = gr.Button("← Back", elem_id="clean-back")
            b_skip = gr.Button("Skip (j)", elem_id="clean-skip")
            b_undo = gr.Button("Undo (u)", elem_id="clean-undo")
        outs = [image, partner, info, pos, path, relabel_to]
        private = {"api_visibility": "private"}
        demo.load(show, [queue, gr.State(0)], outs, js=KEYS_JS, **private)
        queue.change(lambda n: show(n, 0), [queue], outs, **private)
        for btn, action in ((b_keep, "keep"), (b_del, "delete"), (b_rel, "relabel"), (b_ns, "not_snake")):
            btn.click(act(action), [queue, pos, path, relabel_to], outs, **private)
        b_skip.click(lambda n, p: show(n, p + 1), [queue, pos], outs, **private)
        b_back.click(lambda n, p: show(n, p - 1), [queue, pos], outs, **private)
        b_undo.click(undo_one, [queue, pos], outs, **private)

        def api_queue(name: str = "label", limit: int = 50) -> list[dict]:
            """The next images to review in a queue (label, duplicates, outliers, quality)."""
            return [wb.item(r) for r in wb.pending(name)[: _count(limit, "limit", 0)]]

        def api_decide(path: str, action: str, new_label: str = "") -> dict:
            """Apply keep, delete, relabel (with new_label) or not_snake to the image at path."""
            if action == "relabel" and isinstance(new_label, str) and new_label.strip():
                label = new_label.strip()
                # a name that cannot be a folder at all gets Decisions' own message (control characters, '/', ...)
                if not folder_name_problem(label) and label not in wb.classes and not (wb.root / label).is_dir():
                    # a typo would otherwise start a one-photo class that fit then refuses
                    raise gr.Error(
                        f"relabel: {label!r} is not a class of this dataset (classes: {', '.join(wb.classes)}); "
                        f"to start a new class, create the folder {wb.root / label} first. Nothing was moved.",
                        print_exception=False,
                    )
            try:
                return wb.decide(path, action, new_label or None)
            except DecisionError as e:
                raise gr.Error(str(e)) from e
            except Exception as e:  # noqa: BLE001 - reported to the caller, traceback logged
                where = path if isinstance(path, str) else None
                raise gr.Error(_failure(wb, str(action), where, e), print_exception=False) from e

        def api_undo(n: int = 1) -> list[dict]:
            """Undo the last n decisions."""
            count = _count(n, "n", 1)
            try:
                return wb.undo(count)
            except DecisionError as e:
                raise gr.Error(str(e)) from e
            except Exception as e:  # noqa: BLE001 - reported to the caller, traceback logged
                raise gr.Error(_failure(wb, "undo", None, e), print_exception=False) from e

        gr.api(api_queue, api_name="queue")
        gr.api(api_decide, api_name="decide")
        gr.api(api_undo, api_name="undo")
    demo.workbench = wb  # for tests and notebooks
    return demo


def launch(
    data_dir: str | Path,
    rows: list[dict],
    not_snake_dir: str = NOT_SNAKE_DIR,
    host: str = "127.0.0.1",
    port: int | None = None,
    share: bool = False,
) -> None:
    """Serve the workbench until interrupted (in Colab, share=True gives a public link)."""
    build_ui(data_dir, rows, not_snake_dir).launch(server_name=host, server_port=port, share=share)
