"""A tiny, randomly initialised LLaVA saved to a folder: the real LLaVA code path, offline.

Same classes as llava-hf/llava-1.5-7b-hf (``LlavaForConditionalGeneration``, ``LlavaProcessor``
with a CLIP image processor and a fast tokenizer), a few thousand parameters. Its answers are
gibberish; tests check mechanics (batching, resume, decoding), not content. Recipe:
/work/shared/notes/tiny-llava.md. Used by tests/test_annotate.py and benchmarks/annotate.py.
"""

from __future__ import annotations

from pathlib import Path

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
_CORPUS = [
    "USER: Describe the object. ASSISTANT: The object is a yellow car parked on a street.",
    "USER: Describe the background. ASSISTANT: The background is a clear blue sky.",
    "A green frog sits on wet grass in a dark forest with brown leaves.",
    "A white ship sails on the blue water under a cloudy gray sky.",
]


def build_tiny_llava(
    folder: str | Path,
    *,
    image_size: int = 32,
    patch_size: int = 16,
    hidden: int = 32,
    layers: int = 2,
    seed: int = 0,
) -> Path:
    """Build a random LLaVA, save model and processor to ``folder``; returns the folder."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    raw.train_from_iterator(_CORPUS * 10, trainer)
    bos = raw.token_to_id("<s>")
    raw.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
    )
    image_token = tokenizer.convert_tokens_to_ids("<image>")
    # initializer_range 0.2 (not 0.02): logits far enough apart that greedy choices depend on
    # the image and prompt and are not near-ties that float noise could flip.
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            image_size=image_size,
            patch_size=patch_size,
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=layers,
            num_attention_heads=2,
            projection_dim=hidden,
            initializer_range=0.2,
        ),
        text_config=LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=layers,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=4096,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            initializer_range=0.2,
        ),
        image_token_index=image_token,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        image_seq_length=(image_size // patch_size) ** 2,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    with torch.no_grad():
        # Never emit <unk>, <s>, <pad> or <image> (their logits 0 lose to the random others);
        # </s> stays possible, so some answers end early and get padded in a batch.
        ids = [tokenizer.convert_tokens_to_ids(t) for t in ("<unk>", "<s>", "<pad>", "<image>")]
        model.lm_head.weight[ids] = 0.0
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": image_size},
            crop_size={"height": image_size, "width": image_size},
        ),
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        image_token="<image>",
        num_additional_image_tokens=1,
    )
    folder = Path(folder)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
