"""Language codes that name NLLB's individual languages through their macrolanguage (`ar` ->
`arb_Arab`, `ms` -> `zsm_Latn`), Chinese regions that name a script (`zh-TW` -> `zho_Hant`), and
what a multilingual model answers when a request names no language (service/validation.py)."""

from __future__ import annotations

import pycountry
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from service.errors import InvalidOptions
from service.languages import language, match
from service.manifest import AttentionSpec, LanguageTags, Limits, Manifest, ModelSpec, SpecialTokens, StackSpec
from service.tokenizer import TextCodec
from service.validation import ModelLimits, RawRequest, validate

# NLLB-200's 202 codes (transformers' FAIRSEQ_LANGUAGE_CODES), in its order
NLLB = """
ace_Arab ace_Latn acm_Arab acq_Arab aeb_Arab afr_Latn ajp_Arab aka_Latn amh_Ethi apc_Arab arb_Arab
ars_Arab ary_Arab arz_Arab asm_Beng ast_Latn awa_Deva ayr_Latn azb_Arab azj_Latn bak_Cyrl bam_Latn
ban_Latn bel_Cyrl bem_Latn ben_Beng bho_Deva bjn_Arab bjn_Latn bod_Tibt bos_Latn bug_Latn bul_Cyrl
cat_Latn ceb_Latn ces_Latn cjk_Latn ckb_Arab crh_Latn cym_Latn dan_Latn deu_Latn dik_Latn dyu_Latn
dzo_Tibt ell_Grek eng_Latn epo_Latn est_Latn eus_Latn ewe_Latn fao_Latn pes_Arab fij_Latn fin_Latn
fon_Latn fra_Latn fur_Latn fuv_Latn gla_Latn gle_Latn glg_Latn grn_Latn guj_Gujr hat_Latn hau_Latn
heb_Hebr hin_Deva hne_Deva hrv_Latn hun_Latn hye_Armn ibo_Latn ilo_Latn ind_Latn isl_Latn ita_Latn
jav_Latn jpn_Jpan kab_Latn kac_Latn kam_Latn kan_Knda kas_Arab kas_Deva kat_Geor knc_Arab knc_Latn
kaz_Cyrl kbp_Latn kea_Latn khm_Khmr kik_Latn kin_Latn kir_Cyrl kmb_Latn kon_Latn kor_Hang kmr_Latn
lao_Laoo lvs_Latn lij_Latn lim_Latn lin_Latn lit_Latn lmo_Latn ltg_Latn ltz_Latn lua_Latn lug_Latn
luo_Latn lus_Latn mag_Deva mai_Deva mal_Mlym mar_Deva min_Latn mkd_Cyrl plt_Latn mlt_Latn mni_Beng
khk_Cyrl mos_Latn mri_Latn zsm_Latn mya_Mymr nld_Latn nno_Latn nob_Latn npi_Deva nso_Latn nus_Latn
nya_Latn oci_Latn gaz_Latn ory_Orya pag_Latn pan_Guru pap_Latn pol_Latn por_Latn prs_Arab pbt_Arab
quy_Latn ron_Latn run_Latn rus_Cyrl sag_Latn san_Deva sat_Beng scn_Latn shn_Mymr sin_Sinh slk_Latn
slv_Latn smo_Latn sna_Latn snd_Arab som_Latn sot_Latn spa_Latn als_Latn srd_Latn srp_Cyrl ssw_Latn
sun_Latn swe_Latn swh_Latn szl_Latn tam_Taml tat_Cyrl tel_Telu tgk_Cyrl tgl_Latn tha_Thai tir_Ethi
taq_Latn taq_Tfng tpi_Latn tsn_Latn tso_Latn tuk_Latn tum_Latn tur_Latn twi_Latn tzm_Tfng uig_Arab
ukr_Cyrl umb_Latn urd_Arab uzn_Latn vec_Latn vie_Latn war_Latn wol_Latn xho_Latn ydd_Hebr yor_Latn
yue_Hant zho_Hans zho_Hant zul_Latn
""".split()


def test_the_list_is_nllbs():
    assert len(NLLB) == len(set(NLLB)) == 202


@pytest.mark.parametrize(
    ("asked", "found"),
    [
        # the macrolanguage's only member NLLB has
        ("sw", "swh_Latn"),
        ("uz", "uzn_Latn"),
        ("ne", "npi_Deva"),
        ("sq", "als_Latn"),
        ("mn", "khk_Cyrl"),
        ("ps", "pbt_Arab"),  # CLDR's Pashto is pbu, which NLLB lacks
        ("om", "gaz_Latn"),
        ("mg", "plt_Latn"),
        ("or", "ory_Orya"),
        ("yi", "ydd_Hebr"),
        ("ff", "fuv_Latn"),
        ("qu", "quy_Latn"),
        ("ay", "ayr_Latn"),
        ("din", "dik_Latn"),
        # several members: the one CLDR writes as the macrolanguage
        ("ar", "arb_Arab"),
        ("AR", "arb_Arab"),
        ("ara", "arb_Arab"),
        ("ar-EG", "arb_Arab"),
        ("fa", "pes_Arab"),
        ("ms", "zsm_Latn"),
        ("ms-MY", "zsm_Latn"),
        ("lv", "lvs_Latn"),
        ("az", "azj_Latn"),
        ("ku", "kmr_Latn"),
        ("no", "nob_Latn"),
        # a member's own code, and a language with a code of its own, as before
        ("prs", "prs_Arab"),
        ("ltg", "ltg_Latn"),
        ("id", "ind_Latn"),
        ("et", "est_Latn"),
        ("nb", "nob_Latn"),
        # one member in two scripts: the script decides
        ("kr", None),
        ("kr-Latn", "knc_Latn"),
        ("tmh", None),
        ("ja", "jpn_Jpan"),
        ("xx", None),
    ],
)
def test_a_macrolanguage_names_nllbs_member_language(asked, found):
    assert match(asked, NLLB) == found


def test_two_letter_codes_name_19_more_of_nllbs_codes_through_their_macrolanguage():
    """By ISO 639-1 equality alone, 113 of NLLB's codes are named by a two-letter code (85 have
    none; `zh` and `ks` have two scripts); macrolanguages name 19 more."""
    two_letter = {lang.alpha_2 for lang in pycountry.languages if hasattr(lang, "alpha_2")}
    by_language = {match(code, NLLB) for code in two_letter if any(language(c) == code for c in NLLB)} - {None}
    named = {match(code, NLLB) for code in two_letter} - {None}
    assert len(by_language) == 113 and len(named) == 132
    assert sorted(c[:3] for c in named - by_language) == sorted(
        "arb ayr azj pes fuv kmr lvs plt khk zsm npi gaz ory pbt quy als swh uzn ydd".split()
    )


@pytest.mark.parametrize(
    ("asked", "available", "found"),
    [
        ("ar", ["ary_Arab", "eng_Latn"], "ary_Arab"),  # the only member
        ("ar", ["acm_Arab", "ary_Arab"], None),  # several, none CLDR's: ambiguous
        ("ar", ["ar", "arb_Arab"], "ar"),  # the macrolanguage's own code wins
        ("arb_Arab", ["ar", "en"], None),  # an individual language does not name its macrolanguage
        ("zh", ["yue_Hant", "eng_Latn"], "yue_Hant"),
        ("zh", ["zho_Hans", "yue_Hant"], "zho_Hans"),  # Chinese itself before a member
    ],
)
def test_membership_on_other_code_lists(asked, available, found):
    assert match(asked, available) == found


@pytest.mark.parametrize(
    ("asked", "found"),
    [
        ("zh-TW", "zho_Hant"),
        ("zh_tw", "zho_Hant"),
        ("zh-HK", "zho_Hant"),
        ("zh-MO", "zho_Hant"),
        ("zh-CN", "zho_Hans"),
        ("zh-SG", "zho_Hans"),
        ("zh-Hant-TW", "zho_Hant"),
        ("zh-Hans-HK", "zho_Hans"),  # a script named outright wins over the region's
        ("zho-TW", "zho_Hant"),
        ("zh", None),
        ("zh-US", None),
    ],
)
def test_a_chinese_region_names_its_script(asked, found):
    assert match(asked, NLLB) == found


def test_a_region_does_not_matter_where_the_model_has_one_chinese():
    assert match("zh-TW", ["zho_Hans", "eng_Latn"]) == "zho_Hans"
    assert match("zh-TW", ["zh", "en"]) == "zh"


# -- requests without a language (service/validation.py) -----------------------------------------

TOKENS = {"deu_Latn": 5, "eng_Latn": 6, "fra_Latn": 7}


def nllb_manifest(**languages) -> Manifest:
    return Manifest(
        name="nllb",
        task="translate",
        architecture="nllb",
        spec=ModelSpec(
            vocab_size=16,
            d_model=8,
            n_heads=2,
            d_ff=16,
            encoder=StackSpec(layers=1),
            decoder=StackSpec(layers=1, attention=AttentionSpec(kind="causal")),
        ),
        special_tokens=SpecialTokens(pad_id=0, eos_id=1, decoder_start_id=1),
        languages=LanguageTags(**({"placement": "decoder_forced", "tokens": TOKENS} | languages)),
        limits=Limits(max_input_tokens=16, max_output_tokens=16),
    )


@pytest.fixture(scope="module")
def codec(tmp_path_factory) -> TextCodec:
    tokenizer = Tokenizer(models.WordLevel({"[UNK]": 0, "</s>": 1, "hello": 2, "world": 3}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    path = tmp_path_factory.mktemp("codec") / "tokenizer.json"
    tokenizer.save(str(path))
    return TextCodec(path)


LIMITS = ModelLimits(max_input_tokens=16, max_output_tokens=16, max_beam_size=4, kv_rows=8)


def test_a_request_without_target_lang_is_told_the_model_needs_one(codec):
    manifest = nllb_manifest(source_tag="before", default_source="eng_Latn")
    message = "model 'nllb' needs target_lang; its languages are: deu_Latn, eng_Latn, fra_Latn"
    with pytest.raises(InvalidOptions, match=f"^{message}$"):
        validate(RawRequest(["hello world"]), manifest, codec, LIMITS)
    with pytest.raises(InvalidOptions, match="^target_lang 'xx' is not one of this model's languages: deu_Latn"):
        validate(RawRequest(["hello world"], target_lang="xx"), manifest, codec, LIMITS)


def test_a_request_without_source_lang_is_told_the_model_needs_one(codec):
    manifest = nllb_manifest(source_tag="before")
    message = "model 'nllb' needs source_lang; its languages are: deu_Latn, eng_Latn, fra_Latn"
    with pytest.raises(InvalidOptions, match=f"^{message}$"):
        validate(RawRequest(["hello world"], target_lang="de"), manifest, codec, LIMITS)
    with pytest.raises(InvalidOptions, match="^source_lang 'xx' is not one of this model's languages"):
        validate(RawRequest(["hello world"], target_lang="de", source_lang="xx"), manifest, codec, LIMITS)


def test_a_request_without_languages_takes_the_models_defaults(codec):
    manifest = nllb_manifest(default="fra_Latn", source_tag="before", default_source="eng_Latn")
    valid = validate(RawRequest(["hello world"]), manifest, codec, LIMITS)
    assert valid.config.forced_bos_id == TOKENS["fra_Latn"]
    assert valid.inputs == [[TOKENS["eng_Latn"], 2, 3]]
    asked = validate(RawRequest(["hello world"], target_lang="de", source_lang="fr"), manifest, codec, LIMITS)
    assert asked.config.forced_bos_id == TOKENS["deu_Latn"] and asked.inputs == [[TOKENS["fra_Latn"], 2, 3]]


def test_a_source_prefix_model_with_a_default_starts_the_source_with_its_tag(codec):
    manifest = nllb_manifest(placement="source_prefix", default="deu_Latn")
    valid = validate(RawRequest(["hello"]), manifest, codec, LIMITS)
    assert valid.inputs == [[TOKENS["deu_Latn"], 2]] and valid.config.forced_bos_id is None


@pytest.fixture(scope="module")
def eos_codec(tmp_path_factory) -> TextCodec:
    """`codec` that appends `</s>`, as checkpoints' tokenizers do: truncation keeps it."""
    tokenizer = Tokenizer(models.WordLevel({"[UNK]": 0, "</s>": 1, "hello": 2, "world": 3}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    path = tmp_path_factory.mktemp("eos_codec") / "tokenizer.json"
    tokenizer.save(str(path))
    return TextCodec(path)


@pytest.mark.parametrize(
    ("languages", "head", "tail"),
    [
        ({"source_tag": "before"}, [TOKENS["fra_Latn"]], [1]),  # NLLB: the source tag, the text, EOS
        ({"source_tag": "after"}, [], [1, TOKENS["fra_Latn"]]),  # NLLB legacy_behaviour: the tag after EOS
        ({"placement": "source_prefix", "lead_ids": [4]}, [4, TOKENS["deu_Latn"]], [1]),  # MADLAD, 5.25 tokenizer
    ],
)
def test_truncation_keeps_the_language_tags_and_eos(eos_codec, languages, head, tail):
    manifest = nllb_manifest(**languages)
    source = None if languages.get("placement") == "source_prefix" else "fr"
    request = RawRequest(["hello world " * 20], target_lang="de", source_lang=source, truncate=True)
    (ids,) = validate(request, manifest, eos_codec, LIMITS).inputs
    assert len(ids) == LIMITS.max_input_tokens
    assert ids[: len(head)] == head and ids[-len(tail) :] == tail
    middle = ids[len(head) : -len(tail)]
    assert middle == ([2, 3] * 20)[: len(middle)]
