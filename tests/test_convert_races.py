"""`npsqueeze convert` against other runs and planted links: two runs writing one new folder at once
(exactly one writes it, or with --force the last complete one wins), a destination that is a link,
side files that are links (followed into a Hugging Face cache's blobs/, refused anywhere else). No
torch: the checkpoints are written with NumPy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import npsqueeze
from bounded import assert_one_line, cli_bounded, numpy_checkpoint
from npsqueeze.tools import convert as c
from npsqueeze.tools.convert import convert
from npsqueeze.weights import CONVERTED

CONFIG = {"model_type": "squeezebert", "vocab_size": 30, "hidden_size": 12, "embedding_size": 12,
          "num_hidden_layers": 2, "num_attention_heads": 3, "intermediate_size": 24, "max_position_embeddings": 16,
          "q_groups": 2, "k_groups": 3, "v_groups": 1, "post_attention_groups": 2, "intermediate_groups": 4,
          "output_groups": 3, "architectures": ["SqueezeBertModel"]}
MODULES = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
           {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
POOLING = {"word_embedding_dimension": 12, "pooling_mode_mean_tokens": True}


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    """A small checkpoint with sentence-transformers' settings, written without torch."""
    folder = numpy_checkpoint(tmp_path_factory.mktemp("race") / "src", CONFIG, None)
    (folder / "modules.json").write_text(json.dumps(MODULES))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(POOLING))
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world"]))
    return folder


def hidden(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


# Each child waits at step `at` until both have reached it: at the rename into place (both passed the
# check made at the start) or, closer, at the rename that must not replace (both saw no DST a moment
# before). `native`: with renameat2's RENAME_NOREPLACE and RENAME_EXCHANGE; else as on a system
# without them (os.mkdir as the lock, the old folder moved aside).
CHILD = """
import os, sys, time
from pathlib import Path
import npsqueeze.tools.convert as c
from npsqueeze.tools.cli import main
src, dst, barrier, native, at, *options = sys.argv[1:]
if native == "0":
    c.renameat2 = lambda a, b, flag: False
step = getattr(c, at)
def synced(*args):
    (Path(barrier) / str(os.getpid())).touch()
    deadline = time.monotonic() + 60
    while len(os.listdir(barrier)) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    return step(*args)
setattr(c, at, synced)
sys.exit(main(["convert", src, dst, *options]))
"""


def race(src: Path, dst: Path, barrier: Path, native: bool, at: str, *options: str
         ) -> list[subprocess.CompletedProcess]:
    barrier.mkdir()
    runs = [subprocess.Popen([sys.executable, "-c", CHILD, str(src), str(dst), str(barrier), str(int(native)), at,
                              *options], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    done = []
    for run in runs:
        out, err = run.communicate(timeout=120)
        done.append(subprocess.CompletedProcess(run.args, run.returncode, out, err))
    return done


def assert_complete(dst: Path) -> None:
    """`dst` is a whole conversion: every file, and it loads."""
    files = sorted(str(p.relative_to(dst)) for p in dst.rglob("*") if p.is_file())
    assert files == sorted(["1_Pooling/config.json", "config.json", "modules.json", "vocab.txt", CONVERTED])
    assert npsqueeze.from_pretrained(dst).config.num_hidden_layers == 2


@pytest.mark.parametrize("at", ["move_into_place", "rename_new"])
@pytest.mark.parametrize("native", [True, False], ids=["renameat2", "mkdir-lock"])
def test_two_runs_to_one_new_folder_one_writes_it(src, tmp_path, native, at):
    for round in range(3):
        dst = tmp_path / f"out{round}"
        done = race(src, dst, tmp_path / f"barrier{round}", native, at)
        assert sorted(d.returncode for d in done) == [0, 2], [d.stderr for d in done]
        winner, loser = sorted(done, key=lambda d: d.returncode)
        assert winner.stdout == f"wrote {dst}\n" and winner.stderr == ""
        assert loser.stdout == "" and loser.stderr == (f"npsqueeze convert: error: {dst} exists (written while this "
                                                       "run converted): pass --force to replace it\n")
        assert_complete(dst)
    assert hidden(tmp_path) == []  # neither left its temporary folder


@pytest.mark.parametrize("native", [True, False], ids=["renameat2", "mkdir-lock"])
def test_two_runs_with_force_the_last_complete_one_wins(src, tmp_path, native):
    dst = tmp_path / "out"
    for round in range(3):
        if round == 2:  # an old folder to replace, from the start
            (dst / "old.txt").write_text("old")
        done = race(src, dst, tmp_path / f"barrier{round}", native, "move_into_place", "--force")
        assert [d.returncode for d in done] == [0, 0], [d.stderr for d in done]
        assert all(d.stdout == f"wrote {dst}\n" and d.stderr == "" for d in done)
        assert_complete(dst)
    assert hidden(tmp_path) == []


def test_two_runs_started_together(src, tmp_path):
    """As a user would start them: no barrier; either the check at the start or the one at the end
    stops the second."""
    for round in range(3):
        dst = tmp_path / f"out{round}"
        runs = [subprocess.Popen([sys.executable, "-m", "npsqueeze", "convert", str(src), str(dst)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        done = [(run.wait(timeout=120), run.stdout.read(), run.stderr.read()) for run in runs]
        assert sorted(code for code, _, _ in done) == [0, 2], done
        (_, out, _), (_, _, err) = sorted(done)
        assert out == f"wrote {dst}\n" and err.count("\n") == 1 and f"{dst} exists" in err, done
        assert_complete(dst)
    assert hidden(tmp_path) == []


# --- a destination that is a link: refused, the link and what it points to untouched ---------------

@pytest.mark.parametrize("target", ["folder", "file", "dangling"])
@pytest.mark.parametrize("force", [False, True])
def test_destination_that_is_a_link_is_refused(src, tmp_path, target, force):
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "keep.txt").write_text("keep")
    (tmp_path / "file").write_text("keep")
    link = tmp_path / "link"
    link.symlink_to(tmp_path / target)
    done = cli_bounded("convert", src, link, *["--force"] * force)
    assert_one_line(done, f"{link} is a symbolic link: convert into the folder it points to, or remove the link",
                    prefix="npsqueeze convert: error: ")
    assert link.is_symlink() and os.readlink(link) == str(tmp_path / target)
    assert (tmp_path / "folder" / "keep.txt").read_text() == "keep" and (tmp_path / "file").read_text() == "keep"
    assert hidden(tmp_path) == [] and not (tmp_path / "dangling").exists()


def test_link_that_takes_the_destination_name_meanwhile_is_removed_not_followed(src, tmp_path):
    """With --force, DST swapped for a link between the first check and the swap: the link ends up
    under the hidden name and is removed, what it points to is left alone."""
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "keep.txt").write_text("keep")
    dst = tmp_path / "out"
    dst.mkdir()
    place = c.move_into_place

    def replaced_by_a_link(tmp, dst, force):
        dst.rmdir()
        dst.symlink_to(tmp_path / "folder")
        place(tmp, dst, force)

    c.move_into_place = replaced_by_a_link
    try:
        convert(src, dst, force=True)
    finally:
        c.move_into_place = place
    assert not dst.is_symlink()
    assert_complete(dst)
    assert (tmp_path / "folder" / "keep.txt").read_text() == "keep" and hidden(tmp_path) == []


# --- side files that are links ----------------------------------------------------------------------

def hf_cache_snapshot(src: Path, cache: Path) -> Path:
    """`src` laid out as huggingface_hub's cache does: every file of snapshots/REV/ is a relative link
    to ../../blobs/<hash> (../../../blobs from a subfolder)."""
    repo = cache / "models--org--tiny"
    snapshot = repo / "snapshots" / "0123abcd"
    (repo / "blobs").mkdir(parents=True)
    for i, path in enumerate(sorted(p for p in src.rglob("*") if p.is_file())):
        rel = path.relative_to(src)
        (repo / "blobs" / f"blob{i}").write_bytes(path.read_bytes())
        (snapshot / rel).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / rel).symlink_to(Path(*[".."] * (len(rel.parts) + 1), "blobs", f"blob{i}"))
    return snapshot


def test_hugging_face_cache_snapshot_loads_and_converts(src, tmp_path):
    snapshot = hf_cache_snapshot(src, tmp_path / "hub")
    assert all(p.is_symlink() for p in snapshot.rglob("*") if not p.is_dir())
    want = npsqueeze.pipeline("sentence-embedding", src)(["hello world"])
    assert (npsqueeze.pipeline("sentence-embedding", snapshot)(["hello world"]) == want).all()
    done = cli_bounded("convert", snapshot, tmp_path / "out")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert_complete(tmp_path / "out")
    for name in ["config.json", "modules.json", "vocab.txt", "1_Pooling/config.json"]:  # copies, not links
        copied = tmp_path / "out" / name
        assert not copied.is_symlink() and copied.read_bytes() == (src / name).read_bytes(), name
    assert (npsqueeze.pipeline("sentence-embedding", tmp_path / "out")(["hello world"]) == want).all()


@pytest.mark.parametrize("name", ["vocab.txt", "1_Pooling/config.json", "tokenizer_config.json"])
@pytest.mark.parametrize("layout", ["folder", "hf cache"])
def test_side_file_linked_from_outside_the_checkpoint_is_refused(src, tmp_path, name, layout):
    planted = tmp_path / "elsewhere" / "secret.txt"
    planted.parent.mkdir()
    planted.write_text('{"planted": true}')
    folder = tmp_path / "src"
    if layout == "folder":
        folder.mkdir()
        for path in (p for p in src.rglob("*") if p.is_file()):
            (folder / path.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
            (folder / path.relative_to(src)).write_bytes(path.read_bytes())
    else:
        folder = hf_cache_snapshot(src, tmp_path / "hub")
    (folder / name).unlink(missing_ok=True)
    (folder / name).symlink_to(planted)
    done = cli_bounded("convert", folder, tmp_path / "out")
    assert_one_line(done, f"{folder / name} is a link to {planted}, outside the checkpoint: convert does not copy it",
                    prefix="npsqueeze convert: error: ")
    assert not (tmp_path / "out").exists() and hidden(tmp_path) == []


def test_links_inside_the_checkpoint_are_followed(src, tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    for path in (p for p in src.rglob("*") if p.is_file()):
        (folder / path.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
        (folder / path.relative_to(src)).write_bytes(path.read_bytes())
    (folder / "shared").mkdir()
    (folder / "vocab.txt").rename(folder / "shared" / "vocab.txt")
    (folder / "vocab.txt").symlink_to("shared/vocab.txt")
    convert(folder, tmp_path / "out")
    assert_complete(tmp_path / "out")
    assert (tmp_path / "out" / "vocab.txt").read_bytes() == (src / "vocab.txt").read_bytes()

