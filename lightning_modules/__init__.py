"""LightningModules and codecs: CodecModule for rate-distortion training, and the codec
interface with its CompressAI, JPEG and WebP adapters for evaluation."""
