"""CVAT for video 1.1 import (`bmvit prepare import-cvat`): hand-written exports of a 4 s, 10 fps,
80x60 video -> the AVA rows, label map and frames bmvit trains on; one clear error per bad input."""

from __future__ import annotations

import numpy as np
import pytest
from inference_fixtures import write_video

from bmvit.cli.main import main as bmvit
from bmvit.data.formats.ava import read_label_map, read_rows
from bmvit.data.formats.cvat import read_cvat, write_cvat
from bmvit.errors import DataError

W, H = 80, 60
CHECKBOXES = """
        <label><name>person</name><attributes>
          <attribute><name>walk</name><mutable>True</mutable><input_type>checkbox</input_type>
            <default_value>false</default_value><values>false</values></attribute>
          <attribute><name>wave</name><mutable>True</mutable><input_type>checkbox</input_type>
            <default_value>false</default_value><values>false</values></attribute>
          <attribute><name>mood</name><mutable>True</mutable><input_type>select</input_type>
            <default_value>calm</default_value><values>calm
busy</values></attribute>
        </attributes></label>
        <label><name>car</name><attributes></attributes></label>"""
LABELS = """
        <label><name>walk</name><attributes></attributes></label>
        <label><name>wave</name><attributes></attributes></label>"""


def xml(tracks: str, labels: str = LABELS, size: str = "<size>40</size><start_frame>0</start_frame><stop_frame>39</stop_frame>",
        original: str = "<original_size><width>80</width><height>60</height></original_size>") -> str:
    return f"""<?xml version="1.0" encoding="utf-8"?>
<annotations>
  <version>1.1</version>
  <meta>
    <task>
      <id>7</id><name>clip</name>{size}<mode>interpolation</mode><overlap>0</overlap><frame_filter></frame_filter>
      <labels>{labels}
      </labels>
      {original}
    </task>
    <source>clip.mp4</source>
  </meta>
{tracks}
</annotations>
"""


def box(frame, x1, y1, x2, y2, outside=0, attrs=""):
    return (f'    <box frame="{frame}" outside="{outside}" occluded="0" keyframe="1" xtl="{x1}" ytl="{y1}" '
            f'xbr="{x2}" ybr="{y2}" z_order="0">{attrs}</box>')


def att(**kw):
    return "".join(f'<attribute name="{k}">{v}</attribute>' for k, v in kw.items())


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("cvat_video") / "clip.mp4", n=40, fps=10, width=W, height=H)


def run_import(tmp_path, video, text, *extra, root=None, name="a.xml"):
    path = tmp_path / name
    path.write_text(text)
    root = root or tmp_path / "root"
    try:
        rc = bmvit(["prepare", "import-cvat", str(path), "--video", str(video), "--root", str(root), *extra])
    except SystemExit as e:  # argparse usage errors (option out of range) exit like the real command
        rc = e.code
    return rc, root


def rows_of(root, split="train"):
    r = read_rows(root / "annotations" / f"{split}.csv")
    return [(v, int(t), *np.round(b, 3).tolist(), int(a), int(p)) for v, t, b, a, p in
            zip(r.video_ids, r.timestamps, r.boxes, r.actions, r.person_or_score)]


def test_label_as_action_interpolation_and_propagation(tmp_path, video, capsys):
    # walk: listed at 0 and 20 -> frame 10 (second 1) is the linear interpolation; outside at 25 -> gone at 30.
    # wave: one box at frame 10 -> kept until the task's stop_frame (frames 20, 30 too).
    tracks = "\n".join([
        '  <track id="3" label="walk" source="manual">',
        box(0, 10, 10, 30, 50), box(20, 30, 20, 50, 60), box(25, 30, 20, 50, 60, outside=1), "  </track>",
        '  <track id="5" label="wave" source="manual">', box(10, 40, 0, 80, 30),
        '    <polygon frame="12" points="1,2;3,4;5,1" outside="0" occluded="0" keyframe="1"><attribute name="x">1</attribute></polygon>',
        "  </track>"])
    rc, root = run_import(tmp_path, video, xml(tracks))
    out = capsys.readouterr().out
    assert rc == 0, out
    assert read_label_map(root / "annotations" / "label_map.pbtxt") == {1: "walk", 2: "wave"}
    assert rows_of(root) == [
        ("clip", 0, 0.125, 0.167, 0.375, 0.833, 1, 3),
        ("clip", 1, 0.25, 0.25, 0.5, 0.917, 1, 3),  # (10+30)/2 / 80, (10+20)/2 / 60, ...
        ("clip", 1, 0.5, 0.0, 1.0, 0.5, 2, 5),
        ("clip", 2, 0.375, 0.333, 0.625, 1.0, 1, 3),
        ("clip", 2, 0.5, 0.0, 1.0, 0.5, 2, 5),
        ("clip", 3, 0.5, 0.0, 1.0, 0.5, 2, 5),
    ]
    assert ("clip (train): 2 tracks, 4 key frames (4 with actors; video frames 0..30 at 10 fps), 6 boxes, "
            "6 rows [walk 3, wave 3], 0 boxes clipped; actions from track labels") in out
    assert "left out: 1 non-box shapes" in out
    # the prepare-frames recipe: 30 fps grid, 4 s -> 120 files, frame 1 = second 0
    assert len(list((root / "frames" / "clip").glob("clip_*.jpg"))) == 120
    assert "data.root=" in out and "data.first_second=0" in out


def test_attributes_as_actions_multilabel(tmp_path, video, capsys):
    tracks = "\n".join([
        '  <track id="0" label="person">',
        box(0, 0, 0, 40, 60, attrs=att(walk="true", wave="false", mood="calm")),
        box(15, 0, 0, 40, 60, attrs=att(walk="true", wave="true", mood="busy")),
        box(30, 0, 0, 40, 60, attrs=att(walk="false", wave="false", mood="busy")), "  </track>",
        '  <track id="1" label="car">', box(0, 50, 30, 70, 50), "  </track>"])
    rc, root = run_import(tmp_path, video, xml(tracks, CHECKBOXES))
    out = capsys.readouterr().out
    assert rc == 0, out
    # labels of the task are not actions here; the select attribute is ignored; the car track is left out
    assert read_label_map(root / "annotations" / "label_map.pbtxt") == {1: "walk", 2: "wave"}
    assert [(t, a, p) for _, t, *_, a, p in rows_of(root)] == [(0, 1, 0), (1, 1, 0), (2, 1, 0), (2, 2, 0)]
    assert "actions from checkbox attributes" in out
    assert "left out: 1 boxes without an action, 1 tracks of labels without checkbox attributes" in out
    # --actions label overrides auto: one action per track label (person, car)
    rc, root2 = run_import(tmp_path, video, xml(tracks, CHECKBOXES), "--actions", "label", root=tmp_path / "r2")
    assert rc == 0
    assert read_label_map(root2 / "annotations" / "label_map.pbtxt") == {1: "person", 2: "car"}


def test_outside_gap_and_clipping(tmp_path, video, capsys):
    tracks = "\n".join([
        '  <track id="2" label="walk">',
        box(0, -8, 6, 32, 66),                 # sticks out left and bottom: clipped
        box(12, 2, 6, 42, 66, outside=1),      # CVAT interpolates up to the outside box, then hides the track
        box(25, 60, 10, 90, 40),               # back (sticks out right), stays to the end
        "  </track>",
        '  <track id="4" label="wave">', box(0, 85, 0, 95, 10), "  </track>"])  # wholly outside: dropped
    rc, root = run_import(tmp_path, video, xml(tracks))
    out = capsys.readouterr().out
    assert rc == 0, out
    # second 1 = frame 10: 10/12 of the way from the first box to the outside box
    x1 = (-8 + 10 / 12 * 10) / W
    assert rows_of(root) == [
        ("clip", 0, 0.0, 0.1, 0.4, 1.0, 1, 2),
        ("clip", 1, round(x1, 3), 0.1, round((32 + 10 / 12 * 10) / W, 3), 1.0, 1, 2),
        ("clip", 3, 0.75, 0.167, 1.0, 0.667, 1, 2),  # second 2 (frame 20) falls in the gap
    ]
    # the wave box never had any area in the frame: left out at each of the 4 key frames (it stays to the end)
    assert "3 boxes clipped" in out and "left out: 4 boxes outside the frame" in out


def test_reimport_replaces_rows_and_keeps_label_ids(tmp_path, video, capsys):
    root = tmp_path / "root"
    ann = root / "annotations"
    ann.mkdir(parents=True)
    (ann / "label_map.pbtxt").write_text('item {\n  name: "stand"\n  id: 1\n}\nitem {\n  name: "wave"\n  id: 3\n}\n')
    (ann / "train.csv").write_text("other,0004,0.100,0.100,0.200,0.200,1,0\n")
    one = "\n".join(['  <track id="0" label="walk">', box(0, 0, 0, 40, 60), "  </track>"])
    assert run_import(tmp_path, video, xml(one), root=root)[0] == 0
    assert read_label_map(ann / "label_map.pbtxt") == {1: "stand", 3: "wave", 4: "walk"}
    assert len(rows_of(root)) == 5
    capsys.readouterr()
    two = "\n".join(['  <track id="0" label="wave">', box(0, 0, 0, 40, 60), box(10, 0, 0, 40, 60, outside=1), "  </track>"])
    assert run_import(tmp_path, video, xml(two), root=root)[0] == 0
    out = capsys.readouterr().out
    assert rows_of(root) == [("other", 4, 0.1, 0.1, 0.2, 0.2, 1, 0), ("clip", 0, 0.0, 0.0, 0.5, 1.0, 3, 0)]
    assert "4 earlier rows of clip replaced (2 rows in all)" in out and "(0 new)" in out
    assert "frames: " in out and "kept (120 files, as 30 fps gives)" in out
    # the same video in the other split is pointed out
    assert run_import(tmp_path, video, xml(two), "--split", "val", root=root)[0] == 0
    assert "also lists clip" in capsys.readouterr().out


def test_task_range_and_frame_step(tmp_path, video):
    # A task over frames 10..30 of the video, every 2nd frame: key frames at seconds 1..3 only.
    size = "<size>11</size><start_frame>10</start_frame><stop_frame>30</stop_frame>"
    tracks = "\n".join(['  <track id="0" label="walk">', box(10, 0, 0, 40, 60), box(30, 40, 0, 80, 60), "  </track>"])
    text = xml(tracks, size=size).replace("<frame_filter></frame_filter>", "<frame_filter>step=2</frame_filter>")
    task = read_cvat(_write(tmp_path / "t.xml", text))
    assert (task.start_frame, task.stop_frame, task.step, task.size) == (10, 30, 2, 11)
    rc, root = run_import(tmp_path, video, text)
    assert rc == 0
    assert [(t, x1) for _, t, x1, *_ in rows_of(root)] == [(1, 0.0), (2, 0.25), (3, 0.5)]


def _write(path, text):
    path.write_text(text)
    return path


def test_writer_reader_round_trip(tmp_path):
    text = xml("\n".join(['  <track id="9" label="walk">', box(3, 1.5, 2.25, 30, 40, attrs=att(note="a &lt; b")),
                          box(8, 1.5, 2.25, 30, 40, outside=1), "  </track>"]), CHECKBOXES)
    task = read_cvat(_write(tmp_path / "in.xml", text))
    again = read_cvat(write_cvat(tmp_path / "out.xml", task))
    def shapes(t):
        return [(t.id, t.label, s.frame, s.box, s.outside, s.keyframe, s.attributes) for t in t.tracks for s in t.shapes]

    assert shapes(again) == shapes(task) and len(shapes(task)) == 2
    assert again.tracks[0].shapes[0].attributes == {"note": "a < b"}
    assert [a.name for a in again.labels["person"]] == ["walk", "wave", "mood"]
    assert (again.width, again.height, again.start_frame, again.stop_frame) == (80, 60, 0, 39)


BAD = [
    ("malformed", lambda: xml('  <track id="0" label="walk">\n' + box(0, 0, 0, 4, 4) + "\n  </trak>"),
     ":{trak}: malformed XML (mismatched tag"),
    ("doctype", lambda: '<?xml version="1.0"?>\n<!DOCTYPE a [<!ENTITY x "y">]>\n<annotations/>',
     ":2: DOCTYPE/ENTITY declarations are refused"),
    ("checkbox value", lambda: xml('  <track id="0" label="person">\n' + box(0, 0, 0, 4, 4, attrs=att(walk="maybe")) + "\n  </track>",
                                   CHECKBOXES), ":{box}: checkbox attribute 'walk' has the value 'maybe'; expected true or false"),
    ("undeclared attribute", lambda: xml('  <track id="0" label="person">\n' + box(0, 0, 0, 4, 4, attrs=att(run="true"))
                                         + "\n  </track>", CHECKBOXES), ":{box}: attribute 'run' is not declared for label 'person'"),
    ("beyond video", lambda: xml('  <track id="0" label="walk">\n' + box(45, 0, 0, 4, 4) + "\n  </track>"),
     ":{box}: box at frame 45, but"),
    ("size", lambda: xml('  <track id="0" label="walk">\n' + box(0, 0, 0, 4, 4) + "\n  </track>",
                         original="<original_size><width>640</width><height>480</height></original_size>"),
     "<original_size> is 640x480 but"),
    ("no actions", lambda: xml('  <track id="0" label="person">\n' + box(0, 0, 0, 4, 4, attrs=att(walk="false")) + "\n  </track>",
                               CHECKBOXES), "no action at any key frame"),
    ("image task", lambda: '<annotations><version>1.1</version><image id="0" name="a.jpg"/></annotations>',
     "'CVAT for images' export"),
    ("bad box", lambda: xml('  <track id="0" label="walk">\n' + box(0, 9, 0, 4, 4) + "\n  </track>"),
     ":{box}: box needs xtl < xbr"),
]


@pytest.mark.parametrize("name,make,expected", BAD, ids=[b[0] for b in BAD])
def test_bad_input_one_clear_error(tmp_path, video, capsys, name, make, expected):
    text = make()
    lines = text.splitlines()
    where = {k: next((i + 1 for i, l in enumerate(lines) if tag in l), 0) for k, tag in (("box", "<box "), ("trak", "</trak>"))}
    rc, root = run_import(tmp_path, video, text)
    err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert rc == 2 and len(err) == 1 and err[0].startswith(f"error: {tmp_path / 'a.xml'}"), err
    assert expected.format(**where) in err[0], err[0]
    assert not (root / "annotations").exists() and not (root / "frames").exists()  # nothing written


def test_reader_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="annotation file not found"):
        read_cvat(tmp_path / "none.xml")
    with pytest.raises(DataError, match=r"frame_filter> 'every=3' is not supported"):
        read_cvat(_write(tmp_path / "f.xml", xml("").replace("<frame_filter></frame_filter>",
                                                             "<frame_filter>every=3</frame_filter>")))


def test_job_export_project_export_and_keyframe_rate(tmp_path, video, capsys):
    one = "\n".join(['  <track id="0" label="walk">', box(0, 0, 0, 40, 60), "  </track>"])
    job = xml(one).replace("<task>", "<job>").replace("</task>", "</job>")
    assert read_cvat(_write(tmp_path / "job.xml", job)).tracks[0].shapes[0].box == (0.0, 0.0, 40.0, 60.0)
    project = xml(one).replace("<task>", "<project>").replace("</task>", "</project>")
    with pytest.raises(DataError, match="project export; export each task"):
        read_cvat(_write(tmp_path / "p.xml", project))
    # one key frame every 2 s; 2 per second cannot be AVA timestamps
    rc, root = run_import(tmp_path, video, xml(one), "--keyframes-per-second", "0.5")
    assert rc == 0 and [t for _, t, *_ in rows_of(root)] == [0, 2]
    capsys.readouterr()
    rc, _ = run_import(tmp_path, video, xml(one), "--keyframes-per-second", "2", root=tmp_path / "r2")
    err = capsys.readouterr().err
    assert rc == 2 and "--keyframes-per-second" in err and "(0, 1]" in err and err.count("\n") == 1
    rc, _ = run_import(tmp_path, video, xml(one), "--keyframes-per-second", "0.3", root=tmp_path / "r3")
    assert rc == 2 and "AVA timestamps are whole seconds" in capsys.readouterr().err


def test_export_zip_is_read_as_its_annotations_xml(tmp_path, video, capsys):
    """CVAT's download is a zip (annotations.xml, images/ when saved): it imports as the xml does."""
    import zipfile

    one = "\n".join(['  <track id="4" label="walk">', box(0, 0, 0, 40, 60), "  </track>"])
    export = tmp_path / "task_clip-2024_05_02-cvat for video 1.1.zip"
    with zipfile.ZipFile(export, "w") as z:
        z.writestr("annotations.xml", xml(one))
        z.writestr("images/frame_000000.png", b"\x89PNG")
    rc = bmvit(["prepare", "import-cvat", str(export), "--video", str(video), "--root", str(tmp_path / "root")])
    assert rc == 0, capsys.readouterr().err
    assert rows_of(tmp_path / "root")[0] == ("clip", 0, 0.0, 0.0, 0.5, 1.0, 1, 4)
    with zipfile.ZipFile(export, "w") as z:
        z.writestr("annotations.xml", xml(one).replace("</track>", "</trak>"))
    with pytest.raises(DataError, match=r"cvat for video 1.1.zip/annotations.xml:\d+: malformed XML"):
        read_cvat(export)
    with zipfile.ZipFile(export, "w") as z:
        z.writestr("images/frame_000000.png", b"\x89PNG")
    with pytest.raises(DataError, match=r"a zip holding one annotations.xml expected .* found none"):
        read_cvat(export)


def test_outside_box_after_the_last_frame_is_fine(tmp_path, video, capsys):
    """CVAT < 2.x exports a shape drawn on the last frame as a track with an outside box one frame
    later, past the end of the video: that box only ends the track."""
    shape = "\n".join(['  <track id="0" label="walk">', box(39, 0, 0, 40, 60), box(40, 0, 0, 40, 60, outside=1),
                       "  </track>", '  <track id="1" label="wave">', box(30, 0, 0, 40, 60), "  </track>"])
    rc, root = run_import(tmp_path, video, xml(shape))
    assert rc == 0, capsys.readouterr().err
    assert [(t, a, p) for _, t, *_, a, p in rows_of(root)] == [(3, 2, 1)]


def test_frame_tags_are_counted_as_left_out(tmp_path, video, capsys):
    """CVAT 2.x video exports carry frame-level <tag>s; they are not person boxes: said, not dropped silently."""
    one = "\n".join(['  <track id="0" label="walk">', box(0, 0, 0, 40, 60), "  </track>",
                     '  <tag frame="3" label="wave" source="manual"></tag>', '  <tag frame="9" label="wave"/>'])
    rc, _ = run_import(tmp_path, video, xml(one))
    out = capsys.readouterr().out
    assert rc == 0 and "left out: 2 frame tags (not per person)" in out, out


def test_label_mode_leaves_out_labels_that_cannot_be_boxes(tmp_path, video, capsys):
    """One action per track label: a polygon (or tag) label of the task is no action class."""
    labels = LABELS + "\n        <label><name>ball</name><type>polygon</type><attributes></attributes></label>"
    tracks = "\n".join(['  <track id="0" label="walk">', box(0, 0, 0, 40, 60), "  </track>",
                        '  <track id="1" label="ball">',
                        '    <polygon frame="0" points="1,2;3,4;5,1" outside="0" occluded="0" keyframe="1"></polygon>',
                        "  </track>"])
    rc, root = run_import(tmp_path, video, xml(tracks, labels.replace("<name>walk</name>",
                                                                      "<name>walk</name><type>rectangle</type>")))
    assert rc == 0, capsys.readouterr().err
    assert read_label_map(root / "annotations" / "label_map.pbtxt") == {1: "walk", 2: "wave"}


def test_names_match_meta_whatever_their_surrounding_spaces(tmp_path, video, capsys):
    """<meta> names are read stripped; a track's label / a box's attribute name with a stray space must
    still be the same label / checkbox (not a second action class, not an undeclared attribute)."""
    tracks = "\n".join(['  <track id="0" label="person ">',
                        box(0, 0, 0, 40, 60, attrs='<attribute name=" walk">true</attribute>'), "  </track>"])
    rc, root = run_import(tmp_path, video, xml(tracks, CHECKBOXES.replace("<name>walk</name>", "<name>walk </name>")))
    assert rc == 0, capsys.readouterr().err
    assert read_label_map(root / "annotations" / "label_map.pbtxt") == {1: "walk", 2: "wave"}
    assert [(t, a) for _, t, *_, a, _p in rows_of(root)] == [(0, 1), (1, 1), (2, 1), (3, 1)]


def test_select_attribute_actions_are_pointed_out(tmp_path, video, capsys):
    """A task with a select attribute (say `action`: walk/wave) and no checkbox reads actions from track
    labels (documented); the import says so instead of silently training one class 'person'."""
    labels = CHECKBOXES.replace("<input_type>checkbox</input_type>", "<input_type>radio</input_type>")
    tracks = "\n".join(['  <track id="0" label="person">', box(0, 0, 0, 40, 60, attrs=att(walk="false", wave="false",
                                                                                           mood="calm")), "  </track>"])
    rc, _ = run_import(tmp_path, video, xml(tracks, labels))
    out = capsys.readouterr().out
    assert rc == 0 and "actions from track labels" in out
    assert "note: actions come from the track labels; the select/radio attributes walk, wave, mood are not read" in out


@pytest.mark.parametrize("vid", [" ", " a", "a,b", "a/b", "a\\b", "..", "a\nb"])
def test_a_video_id_that_cannot_name_a_folder_and_a_column_is_refused(tmp_path, vid):
    from bmvit.data.prepare.cvat_import import import_cvat
    from bmvit.errors import ConfigError

    with pytest.raises(ConfigError, match="--video-id .*: must be non-empty"):
        import_cvat(tmp_path / "a.xml", tmp_path / "v.mp4", tmp_path / "root", video_id=vid)
