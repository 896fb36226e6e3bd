from .checkpoint_hook import AtomicCheckpointHook

__all__ = ['AtomicCheckpointHook']
