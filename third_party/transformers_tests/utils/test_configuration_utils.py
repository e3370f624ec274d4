"""Stand-in (ours): the sdist lacks tests/utils. ConfigTester.check_config_arguments_init builds a config from these
non-default values of PreTrainedConfig's common fields and checks each one is kept (dtype must be float16)."""

config_common_kwargs = {
    "output_hidden_states": True,
    "return_dict": False,
    "dtype": "float16",
    "chunk_size_feed_forward": 5,
    "architectures": ["ASTForAudioClassification"],
    "problem_type": "multi_label_classification",
}
