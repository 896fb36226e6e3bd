# Synthetic shapes, the embedded default dataset (COCO format).
# Generate it with:  python tools/dataset_converters/make_shapes.py
# (or `make demo`, which does it when missing).
#
# The keys carry a `shapes_` prefix so that a model config can list this file
# next to a COCO config in `_base_` (mmengine forbids duplicate keys among
# bases) and swap the data in with:
#   train_dataloader = dict(_base_.shapes_train_dataloader, _delete_=True)
# as the `*_shapes.py` configs do.
shapes_data_root = 'data/shapes/'
shapes_metainfo = dict(
    classes=('circle', 'square', 'triangle', 'star', 'hexagon', 'cross'),
    palette=[(220, 20, 60), (0, 128, 255), (0, 200, 0), (255, 200, 0),
             (160, 32, 240), (0, 220, 220)])

# images are used at their generated size (scale_factor 1 records the
# `scale_factor` meta the heads need)
shapes_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale_factor=1.0, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
shapes_test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale_factor=1.0, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
shapes_train_dataloader = dict(
    batch_size=4,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(
        type='CocoDataset',
        data_root=shapes_data_root,
        metainfo=shapes_metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        filter_cfg=dict(filter_empty_gt=False),
        pipeline=shapes_train_pipeline))
shapes_val_dataloader = dict(
    batch_size=4,
    num_workers=1,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='CocoDataset',
        data_root=shapes_data_root,
        metainfo=shapes_metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        test_mode=True,
        pipeline=shapes_test_pipeline))
shapes_val_evaluator = dict(
    type='CocoMetric',
    ann_file=shapes_data_root + 'annotations/instances_val.json',
    metric='bbox',
    format_only=False)
