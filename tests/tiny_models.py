"""Tiny random-weight stand-ins for the XEmoGPT parts, built in-process (no download) for tests and exports.

`build_tiny_xemogpt(root)` writes, in well under 3 s:
- a tiny CLIPModel (vision tower hidden 32, 2 layers, patch 16, image 224) + a CLIPImageProcessor config, so
  the real 224 px preprocessing path runs, and a small BPE tokenizer for its text tower (VECB training);
- a tiny HuBERT (stable-layer-norm like HuBERT-Large, real 320x conv downsampling = 50 frames/s) + a
  Wav2Vec2FeatureExtractor config with return_attention_mask=True;
- a tiny Qwen3 causal LM with a byte-level BPE tokenizer (covers any text) that has a pad token;
- a synthetic XEmoGPT checkpoint with the RELEASED key names (bridges, projectors, PEFT LoRA on q/k/v,
  training-only heads and frozen encoder copies);
- a settings YAML (profile xemogpt) pointing at all of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml

NUM_FRAMES = 16
LORA_R = 4
LORA_ALPHA = 8
LLM_HIDDEN = 64
LLM_LAYERS = 2
ENC_HIDDEN = 32
# The tiny configurations (also bench/gpu_xemogpt.py's --size tiny, beside the published full-size ones there).
CLIP_VISION = dict(hidden_size=ENC_HIDDEN, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                   image_size=224, patch_size=16, projection_dim=16)
HUBERT = dict(
    hidden_size=ENC_HIDDEN, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
    conv_dim=(16,) * 7, conv_stride=(5, 2, 2, 2, 2, 2, 2), conv_kernel=(10, 3, 3, 3, 3, 2, 2),
    conv_bias=True, feat_extract_norm="layer", do_stable_layer_norm=True,
    num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, vocab_size=32,
)
QWEN3 = dict(hidden_size=LLM_HIDDEN, intermediate_size=128, num_hidden_layers=LLM_LAYERS, num_attention_heads=4,
             num_key_value_heads=2, head_dim=16, max_position_embeddings=4096, tie_word_embeddings=True)

# Text the tokenizer is trained on: the released prompt plus generic English, so merges are realistic.
_CORPUS = [
    "###Human: The audio content is as follows: <Audio><AudioHere></Audio>. ",
    "Meanwhile, we uniformly sample raw frames from the video: <Video><VideoHere></Video>. ",
    "The subtitle of this video is: <Subtitle>I cannot believe you did this again.</Subtitle>. ",
    "Now, please answer my question based on all the provided information. ###Assistant: ",
    "Please describe the speaker's emotional state in the video. **Output Requirements:**",
    "In the video, the speaker frowns. In the audio, the voice is loud. The emotion is angry.",
    "neutral happy sad angry worried surprise fear disgust contempt",
    "The person smiles and speaks softly, which suggests that they feel happy and relaxed.",
]


def byte_bpe_tokenizer(out: Path) -> Any:
    """A byte-level BPE (covers any text) with a pad token, trained on the released prompt; saved to `out`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<|endoftext|>", eos_token="<|im_end|>", bos_token=None,
    )
    fast.save_pretrained(out)
    return fast


def _clip_tokenizer(out: Path) -> Any:
    """A lower-case BPE that fits the tiny text tower (vocab 100, 32 positions, bos 0, eos = pad 1)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|startoftext|>", "<|endoftext|>", "<unk>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    alphabet = list("abcdefghijklmnopqrstuvwxyz0123456789.,'")
    trainer = trainers.BpeTrainer(vocab_size=100, special_tokens=specials, initial_alphabet=alphabet,
                                  show_progress=False)
    tok.train_from_iterator([s.lower() for s in _CORPUS] * 4, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", 0), ("<|endoftext|>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|startoftext|>", eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>", unk_token="<unk>", model_max_length=32)
    fast.save_pretrained(out)
    return fast


def clip_image_processor() -> Any:
    """CLIP's published preprocessing: shortest edge 224, center crop 224, its mean and std."""
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(
        size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}, do_center_crop=True,
        image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.26862954, 0.26130258, 0.27577711],
    )


def hubert_feature_extractor() -> Any:
    """HuBERT-Large's: 16 kHz, normalised, padded with an attention mask."""
    from transformers import Wav2Vec2FeatureExtractor

    return Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=True,
    )


def _clip(out: Path) -> Any:
    from transformers import CLIPConfig, CLIPModel

    vision = CLIP_VISION
    text = dict(hidden_size=ENC_HIDDEN, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                vocab_size=100, max_position_embeddings=32, projection_dim=16, bos_token_id=0, eos_token_id=1,
                pad_token_id=1)
    cfg = CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
    model = CLIPModel(cfg).eval()
    model.save_pretrained(out)
    clip_image_processor().save_pretrained(out)
    _clip_tokenizer(out)
    return model


def _hubert(out: Path) -> Any:
    from transformers import HubertConfig, HubertModel

    cfg = HubertConfig(**HUBERT)
    model = HubertModel(cfg).eval()
    model.save_pretrained(out)
    hubert_feature_extractor().save_pretrained(out)
    return model


def _qwen3(out: Path, tok: Any) -> Any:
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = Qwen3Config(vocab_size=len(tok), **QWEN3, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                      bos_token_id=None)
    model = Qwen3ForCausalLM(cfg).eval()
    model.save_pretrained(out)
    return model


def _prefixed(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + k: v.detach().clone() for k, v in sd.items()}


def _checkpoint(clip: Any, hubert: Any, llm: Any) -> dict[str, torch.Tensor]:
    """A state dict laid out like the released Lightning checkpoint (keys of XEmoGPT.state_dict())."""
    from transformers.models.clip.modeling_clip import CLIPEncoderLayer
    from transformers.models.hubert.modeling_hubert import HubertEncoderLayer

    sd: dict[str, torch.Tensor] = {}
    vcfg, hcfg, lcfg = clip.config.vision_config, hubert.config, llm.config
    for i in range(2):
        vlayer, alayer = CLIPEncoderLayer(vcfg), HubertEncoderLayer(hcfg)
        # LayerNorms start at (1, 0); perturb them so a wrong mapping changes the output.
        for layer in (vlayer, alayer):
            for p in layer.parameters():
                p.data.add_(torch.randn_like(p) * 0.05)
        sd |= _prefixed(vlayer.state_dict(), f"visual_encoder.visual_alignment_layer.{i}.")
        sd |= _prefixed(alayer.state_dict(), f"audio_encoder.audio_alignment_layer.{i}.")
    sd["visual_encoder.position_embedding"] = torch.randn(1, NUM_FRAMES, vcfg.hidden_size) * 0.02
    sd["visual_llm_project.weight"] = torch.randn(lcfg.hidden_size, vcfg.hidden_size) * 0.1
    sd["visual_llm_project.bias"] = torch.randn(lcfg.hidden_size) * 0.01
    sd["audio_llm_project.weight"] = torch.randn(lcfg.hidden_size, hcfg.hidden_size) * 0.1
    sd["audio_llm_project.bias"] = torch.randn(lcfg.hidden_size) * 0.01
    # training-only heads (not needed to serve)
    sd["visual_encoder.visual_project.weight"] = torch.randn(24, vcfg.hidden_size)
    sd["visual_encoder.visual_project.bias"] = torch.randn(24)
    sd["visual_encoder.text_project.weight"] = torch.randn(24, clip.config.text_config.hidden_size)
    sd["visual_encoder.text_project.bias"] = torch.randn(24)
    sd["visual_encoder.attention_pooling.attn_vector"] = torch.randn(vcfg.hidden_size)
    sd["visual_encoder.temporal_disc_head.0.weight"] = torch.randn(24, 24)
    sd["visual_encoder.temporal_disc_head.0.bias"] = torch.randn(24)
    sd["visual_encoder.temporal_disc_head.2.weight"] = torch.randn(1, 24)
    sd["visual_encoder.temporal_disc_head.2.bias"] = torch.randn(1)
    sd["visual_encoder.frame_reconstructor.weight"] = torch.randn(vcfg.hidden_size, vcfg.hidden_size)
    sd["visual_encoder.frame_reconstructor.bias"] = torch.randn(vcfg.hidden_size)
    sd["audio_encoder.audio_project.weight"] = torch.randn(24, hcfg.hidden_size)
    sd["audio_encoder.audio_project.bias"] = torch.randn(24)
    # frozen encoder copies, identical to the pretrained encoders (as in a real run)
    sd |= _prefixed(clip.state_dict(), "visual_encoder.clip.")
    sd |= _prefixed(hubert.state_dict(), "audio_encoder.audio_encoder.")
    # PEFT LoRA on q/k/v (A: r x in, B: out x r); B is non-zero as after training
    head_dim = lcfg.head_dim
    outs = {"q": lcfg.num_attention_heads * head_dim, "k": lcfg.num_key_value_heads * head_dim,
            "v": lcfg.num_key_value_heads * head_dim}
    for n in range(lcfg.num_hidden_layers):
        for p, d_out in outs.items():
            base = f"llm_model.base_model.model.model.layers.{n}.self_attn.{p}_proj"
            sd[f"{base}.lora_A.default.weight"] = torch.randn(LORA_R, lcfg.hidden_size) * 0.05
            sd[f"{base}.lora_B.default.weight"] = torch.randn(d_out, LORA_R) * 0.05
    return sd


def build_tiny_xemogpt(root: Path) -> dict[str, Any]:
    """Build every tiny part under `root`; returns their paths plus the LoRA r/alpha the YAML uses."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    paths = {"clip": root / "clip", "hubert": root / "hubert", "llm": root / "llm",
             "checkpoint": root / "xemogpt_tiny.ckpt", "config": root / "xemo.yaml"}
    clip = _clip(paths["clip"])
    hubert = _hubert(paths["hubert"])
    tok = byte_bpe_tokenizer(paths["llm"])
    llm = _qwen3(paths["llm"], tok)
    # Lightning wraps the state dict; the loader must accept both layouts.
    torch.save({"state_dict": _checkpoint(clip, hubert, llm), "epoch": 3}, paths["checkpoint"])
    cfg = {
        "profile": "xemogpt",
        "ingest": {"timeline_fps": 0, "video_decoder": "pyav"},
        "generation": {"max_tokens": 8, "temperature": 0.0},
        "xemogpt": {
            "clip": str(paths["clip"]), "hubert": str(paths["hubert"]), "llm": str(paths["llm"]),
            "checkpoint": str(paths["checkpoint"]), "llm_backend": "transformers",
            "lora_r": LORA_R, "lora_alpha": LORA_ALPHA,
        },
    }
    paths["config"].write_text(yaml.safe_dump(cfg, sort_keys=False))
    return {**paths, "root": root, "lora_r": LORA_R, "lora_alpha": LORA_ALPHA}
