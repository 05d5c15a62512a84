"""Every command's refusals, run as the command lines a user types: one
`error:` line on stderr naming the culprit, the exit status docs/errors.md
gives, no traceback, nothing written (issue #30)."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

from jepa_jax.run import files as records
from jepa_jax.run import opening as workdir_config
from conftest import ROOT, load

TINY = '--config=configs/gentle.py:tiny'


def _run(module, *args, timeout=300):
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, '-m', module, *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)


def _one_line(out, status):
  """The one stderr line of a refusal with exit status `status`."""
  lines = [l for l in out.stderr.splitlines() if l.strip()]
  assert out.returncode == status and len(lines) == 1, (out.returncode, out.stderr[-3000:])
  assert 'Traceback' not in out.stderr
  return lines[0]


def _listing(folder):
  return sorted((str(p.relative_to(folder)), p.read_bytes() if p.is_file() else None)
                for p in pathlib.Path(folder).rglob('*'))


def _config_json(folder, **changes):
  cfg = load('gentle', 'tiny')
  for key, value in changes.items():
    setattr(cfg, key, value)
  folder.mkdir()
  records.write_json(str(folder / 'config.json'), workdir_config.config_to_json(cfg))


def _holds_another_config(w):
  _config_json(w, seed=3)


def _holds_outputs_but_no_checkpoint(w):
  _config_json(w)
  (w / 'final_state.msgpack').write_bytes(b'weights')


def _holds_files_without_config(w):
  w.mkdir()
  (w / 'summary.json').write_text('{"status": "completed"}\n')


def _holds_a_torn_config(w):
  w.mkdir()
  (w / 'config.json').write_text('{"seed": 0, "tr')


@pytest.mark.parametrize('prepare, args, expected', [
    (None, ('--config.init_from=/nonexistent/run',),
     "error: init_from='/nonexistent/run': no such checkpoint directory"),
    (_holds_another_config, (), "error: workdir '{w}' holds a run of a different config "
     '(seed: 3 -> 0); use a new --workdir'),
    (_holds_outputs_but_no_checkpoint, (),
     "error: workdir '{w}' holds the outputs of a run (final_state.msgpack) but no usable "
     'checkpoint to continue it; pass --config.checkpoint.restart=True'),
    (_holds_files_without_config, (),
     "error: workdir '{w}' holds files of a run without config.json (summary.json)"),
    (_holds_a_torn_config, (), "error: workdir '{w}': {w}/config.json is damaged ("),
])
def test_main_workdir_and_init_from_refusals_are_one_line_status_1(prepare, args, expected,
                                                                   tmp_path):
  """CheckpointError: the `except Exception` clause of main.py once came first
  and turned each of these into a 30-line traceback."""
  w = tmp_path / 'run'
  if prepare:
    prepare(w)
  before = _listing(tmp_path)
  line = _one_line(_run('jepa_jax.main', TINY, f'--workdir={w}', *args), 1)
  assert line.startswith(expected.format(w=w)), line
  assert _listing(tmp_path) == before


@pytest.mark.parametrize('text, expected', [
    ('use_vq: null\n', 'use_vq: null is not true or false; write true or false'),
    ('vq:\n  enabled: true\n  enabled: false\n',
     '{y} line 3: enabled: given twice (lines 2 and 3)'),
    ('commitment_cost: 0.1\ncommitment_cost: 0.2\n',
     '{y} line 2: commitment_cost: given twice (lines 1 and 2)'),
    ('', 'no keys (the file is empty or only comments); write {{}} to train'),
    ('# only a comment\n', 'no keys (the file is empty or only comments)'),
])
def test_main_refuses_yaml_null_booleans_repeated_keys_and_empty_files(text, expected,
                                                                       tmp_path):
  y = tmp_path / 'run.yaml'
  y.write_text(text)
  line = _one_line(_run('jepa_jax.main', f'--config={y}:tiny', f'--workdir={tmp_path / "w"}'),
                   2)
  assert line.startswith(f'config error: --config={y}:tiny: ' + expected.format(y=y)), line
  assert sorted(os.listdir(tmp_path)) == ['run.yaml']


def test_an_explicitly_empty_yaml_mapping_is_base_py(tmp_path):
  """config_export of base.py writes `{}`, which loads (an empty file does not)."""
  from jepa_jax.config import load as config_lib  # noqa: PLC0415
  from jepa_jax.config import yaml_io as yaml_config  # noqa: PLC0415
  text = yaml_config.to_yaml(load('base'), 'header')
  assert text == '# header\n{}\n'
  (tmp_path / 'base.yaml').write_text(text)
  assert config_lib.load_config(str(tmp_path / 'base.yaml')).to_dict() == load('base').to_dict()


def _make_folder(root):
  from PIL import Image  # noqa: PLC0415
  import numpy as np  # noqa: PLC0415
  rng = np.random.default_rng(0)
  for c in ('cat', 'dog'):
    os.makedirs(root / c)
    for k in range(4):
      Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
          root / c / f'{k}.png')
  return root


@pytest.fixture(scope='module')
def packed(tmp_path_factory):
  """A packed ArrayRecord folder of 8 images in 2 shards (python -m jepa_jax.data.pack)."""
  root = tmp_path_factory.mktemp('packed')
  out = root / 'ar'
  done = _run('jepa_jax.data.pack', '--folder', str(_make_folder(root / 'imgs')),
              '--out', str(out), '--shards', '2')
  assert done.returncode == 0, done.stderr[-2000:]
  return out


@pytest.mark.parametrize('damage', ['truncated', 'zero bytes', 'garbled'])
def test_a_damaged_arrayrecord_shard_is_one_line_naming_it(damage, packed, tmp_path):
  ar = tmp_path / 'ar'
  ar.mkdir()
  for f in os.listdir(packed):
    (ar / f).write_bytes((packed / f).read_bytes())
  shard = ar / 'data-00001-of-00002.array_record'
  good = shard.read_bytes()
  shard.write_bytes({'truncated': good[:len(good) // 2], 'zero bytes': b'',
                     'garbled': good[:100] + bytes(len(good) - 100)}[damage])
  w = tmp_path / 'run'
  line = _one_line(_run('jepa_jax.main', TINY, f'--workdir={w}',
                        '--config.data.name=arrayrecord', f'--config.data.path={ar}',
                        '--config.data.image_size=(8, 8)', '--config.data.channels=3',
                        '--config.data.val_fraction=0.25'), 2)
  assert line.startswith(f'data error: damaged ArrayRecord shard {shard}: '), line
  assert not w.exists()


def test_pack_refuses_an_out_that_is_a_file(tmp_path, packed):
  afile = tmp_path / 'afile'
  afile.write_text('x')
  out = _run('jepa_jax.data.pack', '--folder', str(packed.parent / 'imgs'), '--out',
             str(afile))
  assert _one_line(out, 2) == f'data error: --out={afile}: exists and is not a folder'
  assert afile.read_text() == 'x'
  out = _run('jepa_jax.data.pack', '--out', str(afile))
  assert _one_line(out, 2) == ('error: python -m jepa_jax.data.pack: the following '
                               'arguments are required: --folder')


def test_evaluate_and_diagnose_name_a_damaged_file(tmp_path):
  w = tmp_path / 'run'
  _config_json(w)
  (w / 'final_state.msgpack').write_bytes(b'\x82\xa6params\x81')     # cut short
  line = _one_line(_run('jepa_jax.evaluate', f'--workdir={w}'), 2)
  assert line.startswith(f'error: {w / "final_state.msgpack"}: damaged or truncated '
                         '(9 bytes; msgpack: '), line
  assert not (w / 'eval.json').exists()
  (w / 'summary.json').write_text('{"status": "comp')                # torn
  line = _one_line(_run('jepa_jax.diagnose', str(w)), 2)
  assert line.startswith(f'error: {w / "summary.json"}: damaged JSON ('), line
  (w / 'config.json').write_text('{"seed": 0, "tr')                   # torn
  line = _one_line(_run('jepa_jax.evaluate', f'--workdir={w}'), 2)
  assert line.startswith(f'error: {w / "config.json"}: damaged JSON ('), line
  line = _one_line(_run('jepa_jax.evaluate', f'--workdir={tmp_path / "none"}'), 2)
  assert line == f'error: {tmp_path / "none"}: not a run folder (no config.json)'


def test_config_export_to_a_folder_is_one_line(tmp_path):
  out = _run('jepa_jax.config_export', TINY, f'--out={tmp_path}')
  assert _one_line(out, 1) == f'error: Is a directory: {tmp_path}'


@pytest.mark.parametrize('args, expected', [
    (('--override=train.nonexistent=1',),
     'config error: --config.train.nonexistent: unknown config key (nearest: '),
    (('--override=train.num_epochs=abc',),
     "error: flag --config.train.num_epochs=abc: invalid literal for int() with base 10"),
    (('--config_arg=bogus',), "config error: --config={root}/configs/gentle.py:bogus: "
     "ValueError: unknown config variant 'bogus'"),
    (('--config_arg=tiny', '--override=vq.ema_decay=1.5'),
     'config error: config.vq.ema_decay=1.5: must be in [0, 1)'),
])
def test_ladder_checks_its_arguments_before_creating_anything(args, expected, tmp_path):
  w = tmp_path / 'ladder'
  line = _one_line(_run('experiments.ladder', f'--workdir={w}', '--no_evaluate', *args), 2)
  assert line.startswith(expected.format(root=ROOT)), line
  assert not w.exists()


def test_ladder_surfaces_the_error_line_of_a_refused_run(tmp_path):
  """A refusal the config checks cannot see (a missing init_from): the run's
  own line, not a traceback about a folder without config.json."""
  w = tmp_path / 'ladder'
  out = _run('experiments.ladder', f'--workdir={w}', '--no_evaluate', '--config_arg=tiny',
             '--override=init_from=/nonexistent/run')
  lines = [l for l in out.stderr.splitlines() if l.strip()]
  log = w / 'B_gentle' / 'run.log'
  assert out.returncode == 1 and lines == [
      f"error: Option B (gentle) refused: error: init_from='/nonexistent/run': no such "
      f'checkpoint directory (see {log})'], out.stderr[-3000:]
  assert not (w / 'ladder.json').exists()


@pytest.mark.slow
def test_a_non_finite_loss_stops_the_run_with_one_line(tmp_path):
  """A learning rate of 1e30 on :tiny: the loss is NaN within the first steps."""
  w = tmp_path / 'run'
  out = _run('jepa_jax.main', TINY, f'--workdir={w}', '--config.train.learning_rate=1e30',
             '--config.train.num_epochs=1', '--config.train.warmup_epochs=0', timeout=600)
  line = _one_line(out, 1)
  assert line.startswith('error: non-finite loss ') and '=nan' in line, line
  assert line.endswith('run stopped, logs up to the last complete epoch are intact')
  assert json.loads((w / 'summary.json').read_text())['status'] == 'failed'


def test_a_damaged_record_read_during_training_names_its_shard(packed, tmp_path):
  """A shard whose index opens but whose records do not (a garbled chunk):
  the read that meets it (a Grain worker's, during training) names the shard."""
  from jepa_jax import data  # noqa: PLC0415
  from jepa_jax.data import arrayrecord  # noqa: PLC0415
  paths = []
  for name in ('data-00000-of-00002.array_record', 'data-00001-of-00002.array_record'):
    raw = bytearray((packed / name).read_bytes())
    if name.startswith('data-00001'):
      for i in range(200, 210):               # inside the first data chunk
        raw[i] ^= 0x5a
    (tmp_path / name).write_bytes(bytes(raw))
    paths.append(str(tmp_path / name))
  reader = arrayrecord.RecordReader(paths, (8, 8), 'RGB')
  assert len(reader) == 8 and reader(0).shape == (8, 8, 3)     # shard 0 reads
  with pytest.raises(data.DataError, match=f'damaged ArrayRecord shard {paths[1]}: '):
    reader(4)                                    # shard 1, record 0


def test_a_missing_requirement_is_one_line_not_a_traceback(tmp_path):
  """`python -m jepa_jax.main` where a requirement is not installed (absl
  blocked in sys.modules): one error line naming the package, status 2."""
  code = ("import sys, runpy; sys.modules['absl'] = None; "
          "sys.argv = ['jepa_jax.main', '--config=configs/gentle.py:tiny', "
          f"'--workdir={tmp_path / 'w'}']; runpy.run_module('jepa_jax.main', run_name='__main__')")
  out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=ROOT))
  lines = [l for l in out.stderr.splitlines() if l.strip()]
  assert out.returncode == 2 and lines == [
      "error: the package 'absl' is missing: install jepa_jax and its requirements first "
      "(pip install -e . in the repository)"], out.stderr
  assert not (tmp_path / 'w').exists()


@pytest.mark.parametrize('form', [('--config', 'configs/gentle.py:tiny'),
                                  ('--config=configs/gentle.py:tiny',)])
def test_config_flag_with_a_space_reads_the_file_as_with_an_equals_sign(form, tmp_path):
  """`--config FILE` (absl's space form) loads FILE as `--config=FILE` does:
  a bad override value is then named (the space form once read a file
  `config_config` and said only that)."""
  out = _run('jepa_jax.main', *form, f'--workdir={tmp_path / "w"}', '--config.seed=abc')
  line = _one_line(out, 2)
  assert line.startswith('error: flag --config.seed=abc:'), line
  assert not (tmp_path / 'w').exists()


def test_a_crop_view_with_token_level_terms_is_refused_naming_them(tmp_path):
  """A cropped context's tokens do not sit on the target's: a config that
  still asks for token-level terms is one line naming them, nothing written."""
  out = _run('jepa_jax.main', '--config=configs/ijepa.py:tiny', f'--workdir={tmp_path / "w"}',
             '--config.data.context_augment=crop')
  line = _one_line(out, 2)
  assert line.startswith("config error: config.data.context_augment='crop': "), line
  assert 'loss.invariance_weight must be 0' in line, line
  assert not (tmp_path / 'w').exists()


def test_a_crop_area_without_a_crop_is_refused_naming_the_key(tmp_path):
  """data.crop_area changes nothing unless the context view is cropped: one
  line naming the key, exit 2, nothing written."""
  out = _run('jepa_jax.main', '--config=configs/ijepa.py:tiny', f'--workdir={tmp_path / "w"}',
             '--config.data.crop_area=(0.08,1.0)')
  line = _one_line(out, 2)
  assert line == ("config error: config.data.crop_area=(0.08, 1.0): "
                  "has no effect without 'crop' in data.context_augment"), line
  assert not (tmp_path / 'w').exists()


def test_local_views_larger_than_the_images_are_refused_before_anything_is_written(tmp_path):
  """The image size is known once the data loads: still one line naming the
  key, exit 2, and no workdir."""
  out = _run('jepa_jax.main', '--config=configs/lejepa_views.py:tiny', f'--workdir={tmp_path / "w"}',
             '--config.loss.views_local=2', '--config.loss.views_local_size=16')
  line = _one_line(out, 2)
  assert line == ("config error: config.loss.views_local_size=16: "
                  'larger than the images (8 pixels a side)'), line
  assert not (tmp_path / 'w').exists()


def test_a_pixel_target_on_colour_ids_is_refused_naming_the_key(tmp_path):
  """ARC grids are colour ids, not pixels: MAE's target there is one line
  naming loss.pixel_weight, nothing written."""
  out = _run('jepa_jax.main', '--config=configs/mae.py:tiny,arc', f'--workdir={tmp_path / "w"}')
  line = _one_line(out, 2)
  assert line.startswith('config error: config.loss.pixel_weight=1.0: pixel data only'), line
  assert not (tmp_path / 'w').exists()
