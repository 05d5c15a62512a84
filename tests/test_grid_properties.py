"""Grid properties used to probe ARC embeddings (no class labels on ARC)."""
import numpy as np

from jepa_jax.data import arc
from jepa_jax.data import grid_properties as gp


def test_properties_of_hand_made_grids():
  g = np.array([[0, 1, 0, 2],
                [1, 0, 0, 2],
                [0, 0, 3, 3],
                [4, 0, 3, 0]])
  assert gp.num_colours(g) == 5
  # 1s touch only diagonally: two objects; the 2s, the 3s and the 4 are one each.
  assert gp.object_count(g) == 5
  assert gp.symmetric(g) == 0
  assert gp.symmetric(np.array([[1, 2, 1], [3, 0, 3]])) == 1        # left-right
  assert gp.symmetric(np.array([[1, 2], [5, 5], [1, 2]])) == 1      # up-down
  assert gp.symmetric(np.array([[7]])) == 1 and gp.num_colours(np.array([[7]])) == 1
  assert gp.object_count(np.zeros((3, 3), int)) == 0
  checker = (np.indices((6, 6)).sum(0) % 2) * 5                     # 18 lone 5s
  assert gp.object_count(checker) == 18


def test_batch_properties_on_padded_canvases():
  grids = [np.array([[0, 1, 0, 2], [1, 0, 0, 2]]), np.array([[6]]),
           (np.indices((6, 6)).sum(0) % 2) * 5]
  canvases = np.stack([arc.pad_to_canvas(g, 30) for g in grids])[..., None]
  props = gp.grid_properties(canvases)
  assert set(props) == set(gp.NAMES)
  np.testing.assert_array_equal(props['num_colours'], [3, 1, 2])
  np.testing.assert_array_equal(props['symmetric'], [0, 1, 0])
  np.testing.assert_array_equal(props['object_count'], [3, 1, gp.OBJECT_COUNT_CAP])
  assert all(v.dtype == np.int32 and v.shape == (3,) for v in props.values())


def test_properties_vary_across_arc_grids():
  tasks = arc.load_tasks('arc-agi-1')[:20]
  grids = [g for _, gs in tasks for g in gs]
  props = gp.grid_properties(np.stack([arc.pad_to_canvas(g, 30) for g in grids]))
  for name, values in props.items():
    assert len(np.unique(values)) >= 2, name          # informative targets
  assert 0 < props['symmetric'].mean() < 1
  assert props['num_colours'].min() >= 1 and props['num_colours'].max() <= 10
