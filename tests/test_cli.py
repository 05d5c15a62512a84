"""The command line explains itself: `--help` (exit 0; configs, variant
strings, key groups)."""
import os
import re
import subprocess
import sys

from jepa_jax import usage
from conftest import ROOT


def test_help_exits_0_and_lists_configs_variant_strings_and_key_groups():
  for flag in ('--help', '-h', '--helpfull'):
    out = subprocess.run([sys.executable, '-m', 'jepa_jax.main', flag], cwd=ROOT,
                         capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, JAX_PLATFORMS='cpu'))
    assert out.returncode == 0, (flag, out.stderr)
    text = out.stdout
    assert 'configs/gentle.py' in text and 'configs/two_stage.py' in text
    assert 'configs/yaml_config.py' not in text            # an adapter, not a config
    variants = text[text.index('Variant strings'):text.index('Key groups')]
    for variant in ('arc', 'tiny', 'vit_s16', 'vit_b16'):
      assert re.search(rf'^ +({variant}|.*, {variant})\b', variants, re.M), variant
    assert 'train' in text and 'compilation_cache_dir' in text and 'stage2' in text
  assert '--workdir' in text and 'absl' in text.lower()     # --helpfull: absl's flags too


def test_help_text_is_read_from_the_configs():
  text = usage.text('DOC')
  names = [n for n, _ in usage.config_files()]
  assert names == sorted(names) and 'configs/base.py' in names
  for name, doc in usage.config_files():
    assert name in text and doc.split()[0] in text
  groups = dict(usage.key_groups())
  assert set(groups) >= {'', 'data', 'model', 'vq', 'train', 'checkpoint', 'monitor'}
  assert 'num_epochs' in groups['train'] and 'seed' in groups['']
  assert usage.two_stage_keys() == ['stage', 'stage2']
  assert usage.variant_strings().startswith('Variant strings')

