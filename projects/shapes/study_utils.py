"""Config rewriting shared by the shapes studies (convergence_study.py,
act_study.py)."""


def iteration_schedule(cfg, iters, lr, val_interval, ckpt_interval):
    """Turn an epoch-based config into an iteration-based run of ``iters``
    iterations at a constant ``lr`` (no drop), validating every
    ``val_interval`` iterations and keeping the last checkpoint saved every
    ``ckpt_interval``; logs by iteration.  Returns ``cfg``, changed in
    place."""
    cfg.train_dataloader.sampler = dict(type='InfiniteSampler', shuffle=True)
    cfg.train_cfg = dict(type='IterBasedTrainLoop',
                         max_iters=iters,
                         val_interval=val_interval)
    cfg.param_scheduler = None
    cfg.optim_wrapper.optimizer.lr = lr
    cfg.log_processor = dict(by_epoch=False)
    cfg.default_hooks.logger.interval = 50
    cfg.default_hooks.logger.log_metric_by_epoch = False
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook',
                                        by_epoch=False,
                                        interval=ckpt_interval,
                                        max_keep_ckpts=1)
    return cfg
