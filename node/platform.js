'use strict'
// The platform tag of the prebuilt files and of the per-platform npm packages:
// linux-x64-gnu, linux-arm64-musl, ... (as napi-rs names them).

function platformTag() {
  const { platform, arch } = process
  if (platform !== 'linux') return `${platform}-${arch}`
  const glibc = process.report?.getReport?.().header?.glibcVersionRuntime
  return `linux-${arch}-${glibc ? 'gnu' : 'musl'}`
}

module.exports = { platformTag }
