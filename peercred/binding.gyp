{
  "targets": [
    {
      "target_name": "peercred",
      "sources": ["src/peercred.cc", "src/socket-tools.cc", "src/stream-pump.cc"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
