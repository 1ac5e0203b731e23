"""The job's stages, one transformation per numbered file, loaded by pipeline.stage_loader."""
