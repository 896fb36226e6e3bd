"""Pictures of what the papers' modules do (used by tools/analysis_tools/).

The drawing helpers live in one submodule per paper and are imported from
there (not here, so that ``import efficient_detr_mm`` stays light):

* :mod:`.focus_tokens`: Focus-DETR's selected foreground tokens per level
  (``tools/analysis_tools/visualize_focus_tokens.py``);
* :mod:`.kda`: Lite-DETR's KDA vs MSDA sampling points and weights
  (``tools/analysis_tools/visualize_kda.py``);
* :mod:`.smca`: SMCA's Gaussian maps and boxes per query and head
  (``tools/analysis_tools/visualize_smca.py``);
* :mod:`.act_clusters`: ACT's encoder-token clusters for a layer and head
  (``tools/analysis_tools/visualize_act_clusters.py``).
"""
