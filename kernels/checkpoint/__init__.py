"""The official checkpoint and the converted files."""
